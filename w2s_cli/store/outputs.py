"""Checks on an output path before any work starts, and the default output names of the stages."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from w2s_cli.errors import W2SError, printable


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def check_output(path: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = (), option: str = "-o") -> Path:
    """Refuse an output that cannot be written, or that would replace one of the command's inputs.

    Called before any slow work: an existing directory, a path under a regular file, a name longer than the
    file system allows, a folder we cannot create a file in, and an output equal to an input all give one
    clear error. Missing parent folders are fine (they are created on write).
    """
    path = Path(path)
    shown = printable(path)
    if str(path) in ("", "."):
        raise W2SError(f"{option}: an empty path is not a file name")
    if str(path) == "-":  # not stdout: artifacts are files, and a pipe passes their paths
        raise W2SError(f"{option} -: outputs are files (stdout carries their paths to a pipe); give a file name")
    try:  # stat() raises for a name too long or a folder we may not search: lengths before is_dir()
        for parent in path.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise W2SError(f"{option} {shown}: {printable(parent)} is a file, not a folder")
                folder = parent
                break
        else:
            folder = Path(".")
        for part in path.parts:
            if len(os.fsencode(part)) > _name_max(folder):
                raise W2SError(f"{option} {shown}: file name too long ({len(os.fsencode(part))} bytes)")
        if path.is_dir():
            raise W2SError(f"{option} {shown}: is a directory; give a file name")
    except OSError as exc:
        raise W2SError(f"{option} {shown}: cannot write there ({exc.strerror or exc})") from None
    for src in inputs:
        if src is None:
            continue
        src = Path(src)
        try:
            same = src.exists() and path.exists() and os.path.samefile(src, path)
        except OSError:  # an input we cannot even stat: its reader says why
            same = False
        if same or Path(os.path.abspath(src)) == Path(os.path.abspath(path)):
            raise W2SError(f"{option} {shown}: is also this command's input; choose another output name")
    try:  # can we create a file there at all (read-only folder or file system)?
        fd, probe = tempfile.mkstemp(prefix=".w2s-", suffix=".probe", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise W2SError(f"{option} {shown}: cannot write in {printable(folder)} ({exc.strerror or exc})") from None
    return path


def default_out(src: Path, kind: str) -> Path:
    """weak.safetensors -> weak.teacher.safetensors -> weak.pseudolabels.safetensors -> weak.result..."""
    stem = src.name.removesuffix(".safetensors")
    for k in ("teacher", "pseudolabels", "result"):
        stem = stem.removesuffix(f".{k}")
    return src.with_name(f"{stem}.{kind}.safetensors")
