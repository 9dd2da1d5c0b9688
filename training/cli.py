"""How every command answers bad input: one line on stderr, `PROG: what was wrong` naming the
input, the expected and the received value, and exit code 2 (argparse's own for a bad argument),
never a traceback. `client/` keeps its own copy of `refuse` (it installs without training/).

    parser = Parser(prog="python -m training.train", ...)   # argparse's errors in one line too
    with answers_bad_input(parser.name, ConfigError, FileNotFoundError):
        ...
"""
from __future__ import annotations

import argparse
import sys
import warnings
from contextlib import contextmanager
from typing import NoReturn

BAD_INPUT = 2  # exit code, as argparse's


def refuse(prog: str, error: BaseException | str) -> NoReturn:
    """Print `prog: error` (its first line) and exit with BAD_INPUT."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    print(f"{prog}: {lines[0]}", file=sys.stderr, flush=True)
    raise SystemExit(BAD_INPUT)


@contextmanager
def answers_bad_input(prog: str, *errors: type[BaseException]):
    """Within it, the given exception types are bad input: refused in one line."""
    try:
        yield
    except errors as error:
        refuse(prog, error)


def one_line_warning(message, category, filename, lineno, file=None, line=None) -> str:
    """A warning as the user reads it: its message, without the source line that raised it."""
    return f"warning: {message}\n"


class Parser(argparse.ArgumentParser):
    """argparse, its errors (a bad or missing argument) answered in one line without the usage text;
    a command that parses with it shows warnings in one line too."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        warnings.formatwarning = one_line_warning

    @property
    def name(self) -> str:
        """The command's short name in its messages: "prepare" for `python -m training.prepare`."""
        return self.prog.split()[-1].rsplit(".", 1)[-1]

    def error(self, message: str) -> NoReturn:
        refuse(self.name, message)
