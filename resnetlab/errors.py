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
