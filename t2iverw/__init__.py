"""t2iverw: build, load and benchmark the T2I-VeRW text-to-image vehicle retrieval dataset."""

__version__ = "0.1.0"
