"""CLI of this stage. Not built yet: every command says so in one line and exits 2."""

import click

from t2iverw.errors import T2IError


def _not_built(name: str) -> click.Command:
    @click.command(name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def command() -> None:
        raise T2IError(f"t2iverw {name} is not built yet (issue #5)")

    command.help = f"(not built yet, issue #5)"
    return command


commands = [_not_built(n) for n in ("segment", "segment-eval", "show",)]
