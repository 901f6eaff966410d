"""The one exception type the command line turns into a one-line message, and the one way to shorten a message."""


class MyopiaError(Exception):
    """A problem with the user's input, data or environment, stated in one clear line.

    The CLI prints ``error: <message>`` and exits with status 2 (no traceback unless
    ``--debug``). Library code raises it for anything a user can fix.
    """


def first_line(exc: BaseException, empty: str | None = None) -> str:
    """The first line of an exception's message; ``empty`` (default: the exception type's name) when it has none."""
    text = str(exc).strip()
    if text:
        return text.splitlines()[0]
    return type(exc).__name__ if empty is None else empty
