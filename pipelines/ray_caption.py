"""`t2iverw caption` across a Ray cluster: actors that each drive a pool of OpenAI-compatible endpoints.

The vLLM servers run where the GPUs are (`pipelines/serve_vllm.sh`, one per GPU or GPU
pair); this pipeline spreads the requests over them from a pool of Ray actors, each with
`--concurrency` requests in flight. The driver takes the log's lock, reads what is
pending (a rerun resumes; other settings are refused unless --redo or --keep) and appends
every record as it arrives, through the same runner as `t2iverw caption`. Every actor
asks the servers which model they serve and must agree with the driver.

    pip install -e '.[ray]'
    python pipelines/ray_caption.py BUILD --actors 4 --concurrency 64 \
        --endpoint http://gpu1:8000/v1 --endpoint http://gpu2:8000/v1
"""

from __future__ import annotations

import functools
from pathlib import Path

import click

from t2iverw.caption.cli import caption_options
from t2iverw.options import runner_options
from t2iverw.pipeline import ray_options, run_pipeline


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("build", type=click.Path(exists=True, file_okay=False, path_type=Path))
@caption_options(("openai", "template"))
@ray_options
@runner_options
def main(backend: str, endpoints: tuple[str, ...], model, wait: float, prompt, hints: str, concurrency: int,
         max_tokens: int, temperature: float, seed: int, max_pixels: int, timeout: float, retries: int, **run) -> None:
    """Caption every pending image of BUILD on a Ray cluster."""
    from t2iverw.caption.run import caption_worker

    make = functools.partial(caption_worker, backend=backend, endpoints=list(endpoints) or None, model=model,
                             prompt=prompt, hints=hints, concurrency=concurrency, max_tokens=max_tokens,
                             temperature=temperature, seed=seed, max_pixels=max_pixels, timeout=timeout,
                             retries=retries, wait=wait)
    run_pipeline(make, "captioned", **run)


if __name__ == "__main__":
    main()
