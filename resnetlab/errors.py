"""The one exception type that means "the user gave us something wrong".

The CLI turns it into a single line on stderr and exit code 2, with no
traceback; everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input: missing or corrupt data, unknown names, nonsense numbers."""

    exit_code = 2


class WriteError(UserError):
    """A result could not be written (full disk, permissions); what was there is kept."""

    exit_code = 1


def first_line(e: BaseException) -> str:
    """An exception's first line for a one-line UserError (its type when it has no message)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
