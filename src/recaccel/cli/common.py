"""What every verb shares: the consoles it prints on, exit codes and error printing, and name
lists.

A verb's handler raises `RecaccelError` for anything the user can fix; `run_verb` prints it with
its hint and returns `EXIT_USER_ERROR`, so no traceback reaches the terminal for it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape

from recaccel.errors import RecaccelError, UnknownNameError

EXIT_USER_ERROR = 2  # a RecaccelError: the message and its hint, no traceback
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports a process SIGINT ended (128 + 2)

# Piped output (CI logs, `| tee`) would otherwise be squeezed to 80 columns.
console = Console(width=None if sys.stdout.isatty() else 140)
errors = Console(stderr=True)


def run_verb(args: argparse.Namespace) -> int:
    """Run the handler the verb's parser set (`set_defaults(run=...)`); return the exit code."""
    try:
        code: int = args.run(args)
        return code
    except RecaccelError as exc:
        errors.print(f"[red]error:[/red] {escape(exc.message)}", highlight=False)
        if exc.hint:
            errors.print(f"Hint: {escape(exc.hint)}", highlight=False)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        errors.print("interrupted")
        return EXIT_INTERRUPTED


def names(value: str, known: Sequence[str], kind: str) -> list[str]:
    """A comma-separated list of names, or "all"; unknown names are refused up front."""
    chosen = list(known) if value == "all" else [v.strip() for v in value.split(",") if v.strip()]
    for name in chosen:
        if name not in known:
            raise UnknownNameError(kind, name, list(known))
    return chosen
