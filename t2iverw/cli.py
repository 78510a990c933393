"""The `t2iverw` command line: thin click commands that parse options and call library functions.

Each stage lives in the module of the same name (`t2iverw caption` -> t2iverw/caption/,
`t2iverw split` -> t2iverw/split.py, `t2iverw eval` -> t2iverw/evaluation/). Heavy
imports (torch, transformers) happen inside the commands so `--help` stays instant.
"""

from __future__ import annotations

import click

from t2iverw import __version__
from t2iverw.errors import T2IError


class UserError(click.ClickException):
    """Printed as one `Error: ...` line; exit code 2 like click's own usage errors."""

    exit_code = 2


class Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except T2IError as exc:
            raise UserError(str(exc)) from None


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="t2iverw")
def cli() -> None:
    """Build and benchmark T2I-VeRW: text-to-image vehicle retrieval on VERI-Wild crops.

    A dataset build runs: synth/index -> caption -> segment -> split -> export.
    """


def _register() -> None:
    from t2iverw.training.cli import commands as training_commands
    from t2iverw.caption.cli import commands as caption_commands
    from t2iverw.commands import commands as dataset_commands
    from t2iverw.evaluation.cli import commands as eval_commands
    from t2iverw.leaderboard.cli import commands as leaderboard_commands
    from t2iverw.release.cli import commands as release_commands
    from t2iverw.report.cli import commands as report_commands
    from t2iverw.review.cli import commands as review_commands
    from t2iverw.search.cli import commands as search_commands
    from t2iverw.segment.cli import commands as segment_commands

    for group in (dataset_commands, caption_commands, segment_commands, eval_commands, training_commands,
                  review_commands, search_commands, report_commands, release_commands, leaderboard_commands):
        for command in group:
            cli.add_command(command)


_register()


def main() -> None:
    cli(prog_name="t2iverw")
if __name__ == "__main__":
    main()
