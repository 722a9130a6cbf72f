"""``python -m connpool``: the ``connpool`` command (see ``connpool --help``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``connpool`` command with ``argv`` (default: ``sys.argv[1:]``); return its exit status."""
    from ._cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
