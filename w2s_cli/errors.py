"""The one exception type for user mistakes: the CLI prints its message on one line and exits 2."""


class W2SError(Exception):
    """A user-facing error (bad input, mismatched artifacts); never a bug in w2s itself."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def printable(text: object) -> str:
    """`text` with control characters escaped, so that a file name cannot break the one error line."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)


class BadValue(W2SError):
    """A value outside its domain, named by the library's own parameter (`energy`, `d_s`): the library speaks in
    its words, and the command line says the flag instead (w2s_cli/cli/flags.py, VALUE_FLAGS)."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name} {problem}")
        self.name, self.problem = name, problem

    def __reduce__(self) -> tuple:  # pickled by its two parts (an exception pickles its args: here one message)
        return type(self), (self.name, self.problem)
