"""The one exception the command line turns into a one-line message and an exit status."""

from __future__ import annotations

__all__ = ["FAILURE", "USAGE", "CLIError"]

#: exit status: a run failed (unreachable target, a backend's run failed)
FAILURE = 1
#: exit status: the command cannot run as asked (bad option, missing library)
USAGE = 2


class CLIError(Exception):
    """A failure to report as ``connpool COMMAND: error: MESSAGE`` with exit status ``code``."""

    def __init__(self, message: str, code: int = FAILURE) -> None:
        super().__init__(message)
        self.code = code
