"""`t2iverw report`: see a dataset as a whole (splits, captions, parts, provenance) in one HTML page.

`t2iverw.report.write.write_report` does the work; this package file stays import-light
so that `t2iverw --help` does not load pandas and matplotlib.
"""

GALLERY = 12  # random overlays drawn by default: the only images a report decodes
