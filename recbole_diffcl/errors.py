"""User-facing errors: one paragraph that names the problem and the fix, no traceback."""
import sys
from typing import Callable, Optional


class UserError(Exception):
    """A mistake in the user's input (model name, dataset, property value, data file).

    The runner prints ``str(error)`` as one paragraph and exits non-zero; it never shows a traceback
    for these. The message should say what is wrong and how to fix it.
    """

    exit_code = 2


def exit_code_of(command: Callable[[], int], interrupted: Optional[str] = None) -> int:
    """Run a command-line entry point: a ``UserError`` becomes its message on stderr and its exit code
    (2). With ``interrupted``, Ctrl-C prints that line and gives 130 (else the KeyboardInterrupt rises)."""
    try:
        return command()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        if interrupted is None:
            raise
        print(interrupted, file=sys.stderr)
        return 130
