"""The one exception type for a user's mistake: bad input, missing data, a bad option."""

import os


class DpauditError(Exception):
    """An error the user can fix. Its message is one sentence that names the file or option.

    The CLI prints it on one line and exits with code 2; it never shows a traceback.
    """


def one_line(message: str) -> str:
    """`message` with every character that is not printable (a newline or carriage return in a
    file name, a terminal escape) written as its escape, so that it cannot forge another line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


def quote_path(path: "str | bytes | os.PathLike") -> str:
    """A file name for a message, non-printable characters escaped (a name cannot forge lines)."""
    return one_line(os.fsdecode(path) if isinstance(path, bytes) else str(path))
