"""baseline stage (see t2iverw/cli.py for how stages are wired)."""
