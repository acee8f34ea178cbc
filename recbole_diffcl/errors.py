"""User-facing errors: one paragraph that names the problem and the fix, no traceback."""


class UserError(Exception):
    """A mistake in the user's input (model name, dataset, property value, data file).

    The runner prints ``str(error)`` as one paragraph and exits non-zero; it never shows a traceback
    for these. The message should say what is wrong and how to fix it.
    """

    exit_code = 2
