"""The one exception type the command line turns into a one-line message."""


class MyopiaError(Exception):
    """A problem with the user's input, data or environment, stated in one clear line.

    The CLI prints ``error: <message>`` and exits with status 2 (no traceback unless
    ``--debug``). Library code raises it for anything a user can fix.
    """


def require(condition: bool, message: str) -> None:
    """Raise :class:`MyopiaError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise MyopiaError(message)
