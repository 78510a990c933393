"""The caption stage: one witness-style caption per image (run.py), with automatic QA (qa.py).

`run_captions` and `run_qa` are imported lazily so `t2iverw --help` does not load the
openai client.
"""

__all__ = ["run_captions", "run_qa"]


def __getattr__(name: str):
    if name == "run_captions":
        from t2iverw.caption.run import run_captions

        return run_captions
    if name == "run_qa":
        from t2iverw.caption.qa import run_qa

        return run_qa
    raise AttributeError(name)
