"""The one exception type for user mistakes: the CLI prints its message on one line and exits 2."""


class W2SError(Exception):
    """A user-facing error (bad input, mismatched artifacts); never a bug in w2s itself."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
