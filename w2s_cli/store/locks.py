"""Two w2s processes on one output: each unit of work that writes into a shared folder (an extraction and
its shards, a trial, a finetune's fits, a frozen prefix's cache) is made by one process at a time.

`producing(path)` takes an exclusive `flock` on a hidden lock file beside `path` (`.NAME.lock`); a second
process says once on stderr that it waits, and when the first is done it decides again what to do (a trial
or an extraction made meanwhile is reused, other work is redone), exactly as if it had started after the
first. The kernel lets go of a lock when its process dies (SIGKILL included), so a killed first process
never blocks the second. The holder removes the lock file as it lets go; a waiter that then finds the name
gone or taken by a newer file tries again on the file that is there, so one lock file is one lock.

Under torchrun the job holds the lock: rank 0 takes it and every rank waits at a barrier until it has it,
then leaves together; every rank must enter the same units in the same order (they do: the stages are
collective). A unit entered again inside itself (a cache that extracts through `extract`) is one claim.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

from w2s_cli.errors import W2SError, printable

# the lock files this process holds (every rank of a torchrun job counts its claims), and how deeply
_HELD: dict[str, int] = {}
# file systems without flock: the work goes ahead unlocked, as before locks existed
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)
T = TypeVar("T")


def agreed(value: T) -> T:
    """Rank 0's `value` on every rank (a single process: `value`): a decision taken before a lock, which
    every rank of a torchrun job must take alike although another process may change the files between
    their looks."""
    from w2s_cli.distributed import all_gather

    return all_gather(value)[0]


def lock_file(path: str | os.PathLike) -> Path:
    """The hidden lock file of `path`: `.NAME.lock` beside it (a hash of the name for a very long one)."""
    path = Path(path)
    name = f".{path.name}.lock"
    if len(os.fsencode(name)) > 255:
        name = f".{hashlib.sha256(os.fsencode(path.name)).hexdigest()[:16]}.lock"
    return path.parent / name


@contextlib.contextmanager
def producing(path: str | os.PathLike) -> Iterator[None]:
    """This process (this torchrun job) alone makes `path` (a file or a folder) inside the block; another
    w2s process that asks for the same `path` waits until the block is left or this process dies."""
    from w2s_cli.distributed import barrier, world

    path = Path(path)
    lock = lock_file(path)
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        key = str(lock.parent.resolve() / lock.name)
    except OSError as exc:
        raise W2SError(f"cannot write {printable(path)}: {exc.strerror or exc}") from None
    if key in _HELD:  # the same unit inside itself
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    w = world()
    fd = _acquire(lock, path) if w.main else None
    _HELD[key] = 1
    done = False
    try:
        barrier()  # every rank starts once rank 0 holds the lock
        yield
        done = True
    finally:
        del _HELD[key]
        if done:
            barrier()  # and it lets go once every rank is done (after an error, at once: the job is ending)
        if fd is not None:
            _release(lock, fd)


def _acquire(lock: Path, path: Path) -> int | None:
    """An open descriptor of `lock` holding its exclusive flock (None where the file system has no locks)."""
    said = False
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise W2SError(f"cannot write {printable(path)}: {exc.strerror or exc}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not said:
                    _say_waiting(fd, path)
                    said = True
                fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            os.close(fd)
            if exc.errno in _NO_LOCKS:
                return None
            raise W2SError(f"cannot lock {printable(lock)}: {exc.strerror or exc}") from None
        except BaseException:  # interrupted while waiting
            os.close(fd)
            raise
        if _still_there(fd, lock):
            _note_holder(fd)
            return fd
        os.close(fd)  # the holder before us removed it as it let go: lock the file that is there now


def _still_there(fd: int, lock: Path) -> bool:
    try:
        mine, there = os.fstat(fd), os.stat(lock)
    except FileNotFoundError:
        return False
    return (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino)


def _note_holder(fd: int) -> None:
    """Write this process's id into the lock file, for the note of a process that waits (best effort: a
    full disk may refuse even these few bytes, and the lock holds without them)."""
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def _say_waiting(fd: int, path: Path) -> None:
    from w2s_cli.progress import stderr

    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        pid = ""
    who = f"another w2s process (pid {pid})" if pid.isdigit() else "another w2s process"
    stderr.print(f"waiting for {who}, which is making {printable(path)}")


def _release(lock: Path, fd: int) -> None:
    """Remove the lock file while still holding it (so that nobody locks a name about to vanish), then let go."""
    with contextlib.suppress(OSError):
        os.unlink(lock)
    os.close(fd)
