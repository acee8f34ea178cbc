"""User-facing errors: one paragraph that names the problem and the fix, no traceback."""
import sys
from typing import Callable, Optional


class UserError(Exception):
    """A mistake in the user's input (model name, dataset, property value, data file).

    The runner prints ``str(error)`` as one paragraph and exits non-zero; it never shows a traceback
    for these. The message should say what is wrong and how to fix it.
    """

    exit_code = 2


class TrainingDiverged(UserError):
    """A loss part became NaN or infinite: training stopped at once. The best checkpoint so far was kept and
    tested and the result file says ``stopped_by: diverged``; the message names the epoch, the loss part and
    the likely fix. Not a mistake in the input as such, so the exit code is 1, as for a failed run."""

    exit_code = 1


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
