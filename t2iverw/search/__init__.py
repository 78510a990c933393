"""`t2iverw search`: a trained (or zero-shot) model used for its real job, a description in, the matching vehicles out."""
