"""The two kinds of failure a user sees; anything else is a bug."""


class DltkError(Exception):
    """Bad usage or bad input that the user can fix (exit code 2).

    The message reads `<what> (<how to fix>)`, printed by the CLI as one line.
    """

    exit_code = 2

    def __init__(self, what: str, fix: str | None = None):
        super().__init__(f"{what} ({fix})" if fix else what)


class CheckFailed(DltkError):
    """The work ran and its result failed a check, such as parity over tolerance (exit code 1)."""

    exit_code = 1


class InputError(DltkError, ValueError):
    """Feeds that do not match a model's inputs. A ValueError for applications, exit 2 for the CLI."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, or its type's name when the message is empty."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
