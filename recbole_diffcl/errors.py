"""User-facing errors: one paragraph that names the problem and the fix, no traceback."""
import sys
from typing import Callable


class UserError(Exception):
    """A mistake in the user's input (model name, dataset, property value, data file).

    The runner prints ``str(error)`` as one paragraph and exits non-zero; it never shows a traceback
    for these. The message should say what is wrong and how to fix it.
    """

    exit_code = 2


def exit_code_of(command: Callable[[], int]) -> int:
    """Run a command-line entry point: a ``UserError`` becomes its message on stderr and exit code 2."""
    try:
        return command()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
