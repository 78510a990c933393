"""What the Ray launchers in pipelines/ share: their Ray options and the run around `run_on_ray`.

The launchers stay thin: each builds its stage's worker factory from its options and
hands it here, so connecting to the cluster, errors and the summary are the same for all.
"""

from __future__ import annotations

from collections.abc import Callable

import click

from t2iverw.errors import T2IError


def ray_options(f: Callable) -> Callable:
    for option in reversed([
        click.option("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local instance)."),
        click.option("--num-cpus", type=click.IntRange(min=1), help="CPUs of a local Ray instance."),
        click.option("--actors", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Worker replicas (one per GPU for a model)."),
        click.option("--gpus-per-actor", type=click.FloatRange(min=0), default=0.0, show_default=True),
    ]):
        f = option(f)
    return f


def run_pipeline(make_worker: Callable, verb: str, *, build, address, num_cpus, actors: int, gpus_per_actor: float,
                 shard, mode, retry_failed: bool, limit, source_root) -> None:
    """Connect to Ray, run the stage with `run_on_ray`, print the summary; user errors are one line, exit 2."""
    from t2iverw.build import BuildDir
    from t2iverw.cli import UserError
    from t2iverw.runner import parse_shard
    from t2iverw.runner.ray_data import run_on_ray

    try:
        bd = BuildDir.open(build, source_root)
        _connect(address, num_cpus)
        report = run_on_ray(bd, make_worker, actors=actors, gpus_per_actor=gpus_per_actor, shard=parse_shard(shard),
                            mode=mode, retry_failed=retry_failed, limit=limit)
    except T2IError as exc:
        raise UserError(str(exc)) from None
    for line in report.lines(verb):
        click.echo(line)


def _connect(address: str | None, num_cpus: int | None) -> None:
    """Join the cluster (or start a local instance) unless this process is already connected; our own
    progress bar replaces Ray Data's."""
    import logging

    import ray

    if not ray.is_initialized():
        ray.init(address=address, num_cpus=None if address else num_cpus, log_to_driver=False,
                 include_dashboard=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
