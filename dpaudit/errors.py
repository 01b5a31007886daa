"""The one exception type for a user's mistake: bad input, missing data, a bad option."""


class DpauditError(Exception):
    """An error the user can fix. Its message is one sentence that names the file or option.

    The CLI prints it on one line and exits with code 2; it never shows a traceback.
    """
