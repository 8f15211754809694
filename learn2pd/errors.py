"""How every command ends on a user's mistake or Ctrl-C: one line on stderr, exit 2 or 130, no traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable

# what a user can cause and fix (bad paths, settings, inputs; ModelLoadError, ConfigError, PolicySpecError are
# ValueErrors, FileNotFoundError an OSError). Anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[Exception], ...] = (ValueError, OSError)
RESUME_HINT = "rerun the same command to resume"


def run_command(prog: str, command: Callable[[], int], resumes: bool = False) -> int:
    """`command()`'s exit code; a user error prints `prog: error: <first line>` (2), Ctrl-C prints
    `prog: interrupted` (with how to resume, when the command resumes) and exits 130."""
    try:
        return command()
    except USER_ERRORS as err:
        text = str(err).strip()
        print(f"{prog}: error: {text.splitlines()[0] if text else type(err).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted" + (f"; {RESUME_HINT}" if resumes else ""), file=sys.stderr)
        return 130
