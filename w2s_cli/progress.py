"""Progress bars and messages on stderr; stdout stays clean for pipes and --json; and what the command is
doing now, so that an interrupt can name it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# soft_wrap: a note is one line however narrow the terminal or log (no hard breaks mid-path)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)

# the work under way, outermost first: (what, how to resume it); `stopped` is its copy as an interrupt found it
_RUNNING: list[tuple[str, str]] = []
_STOPPED: list[tuple[str, str]] = []


def progress_bar(quiet: bool = False) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        disable=quiet or not stderr.is_terminal,
        transient=False,
    )


@contextlib.contextmanager
def running(what: str, resume: str) -> Iterator[None]:
    """Mark `what` (e.g. "a finetune") as under way while the block runs (also a decorator); `resume` says how
    to go on after an interrupt. Ctrl-C unwinds the blocks before main() sees it, so the innermost block it
    passes keeps a copy of the whole stack for `interrupted_during`."""
    _RUNNING.append((what, resume))
    try:
        yield
    except BaseException as exc:
        if not isinstance(exc, Exception) and not _STOPPED:  # an interrupt (KeyboardInterrupt, SIGTERM's)
            _STOPPED[:] = _RUNNING
        raise
    finally:
        _RUNNING.pop()


def interrupted_during() -> tuple[str, str] | None:
    """The outermost work an interrupt stopped (what, how to resume), once; None if it stopped none."""
    found = _STOPPED[0] if _STOPPED else None
    _STOPPED.clear()
    return found
