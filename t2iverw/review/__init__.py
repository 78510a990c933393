"""`t2iverw review`: a local web app to review and correct captions, one image at a time.

Each decision is a caption record with `source: human` (decisions.py); the page shows
the image with its six part masks, the caption, its QA flags, metadata and provenance.
"""
