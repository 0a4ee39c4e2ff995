"""One error base for every brisc command: a refusal or failure that is reported in one line, never a traceback.

Each module's errors derive from ``BriscError`` and carry the exit code the command ends with (2: usage or model
error, nothing written; 1: the run stopped part-way, what was done is kept). ``report`` is the one place that turns
one into its line and code.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager


class BriscError(Exception):
    exit_code = 2


class OutOfSpaceError(BriscError):
    """The disk filled up: every complete row is kept, nothing is torn; free space and resume."""

    exit_code = 1


def report(prog: str, e: BriscError) -> int:
    """Print ``prog: error: <message>`` on stderr; -> the exit code."""
    print(f"{prog}: error: {e}", file=sys.stderr)
    return e.exit_code


@contextmanager
def one_line_errors(prog: str):
    """Every command's body runs in this: a BriscError ends the process with its one line and exit code."""
    try:
        yield
    except BriscError as e:
        sys.exit(report(prog, e))
