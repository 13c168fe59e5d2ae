"""`--config FILE.toml`: a study's options in a file, for run, sweep, rank-teachers and finetune.

Every key is an option's long name without the dashes, with a TOML value of the option's type:

    vary = ["n-pseudo=500,1000,2000"]   # a repeatable option takes a list
    subspace = "300"
    trials = 5
    pretrained = false                  # a --flag/--no-flag pair by its first name

The file is read before the command line is parsed and handed to click as the command's `default_map`, after
each value is checked against its option's type (a TOML value of another type, such as `epochs = true` or
`lr = "0.1"`, is refused with its line, as the command line refuses `--epochs true`); click then converts and
the option groups check them exactly as the command line's, and options given on the command line
override the file (a repeatable option replaces the file's whole list). A key that is not an option of the
command is refused with its line. Every command records its effective configuration (each option's final
value, by long name) in the artifacts it writes, as `configuration`; a sweep spread over jobs also writes
it as OUT/jobs/sweep.toml, which `w2s sweep --collect OUT` reads back.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import re
import sys
import typing
from enum import Enum
from pathlib import Path
from types import UnionType
from typing import Any

from w2s_cli.errors import W2SError, printable
from w2s_cli.store import artifact as store

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

COMMANDS = ("run", "sweep", "rank-teachers", "finetune")
NOT_IN_FILES = ("config", "dry-run", "collect")  # options about this invocation, not about the study


def option_names(command: Any) -> dict[str, tuple[Any, bool]]:
    """{long name: (click parameter, whether the name is a flag's negative form)}; arguments by name."""
    names: dict[str, tuple[Any, bool]] = {}
    for param in command.params:
        if param.param_type_name == "argument":
            names[param.name] = (param, False)
            continue
        for opt in param.opts:
            if opt.startswith("--"):
                names[opt[2:]] = (param, False)
        for opt in getattr(param, "secondary_opts", ()):
            if opt.startswith("--"):
                names[opt[2:]] = (param, True)
    return names


def _line(text: str, key: str) -> str:
    match = re.search(rf"^[ \t]*(\[+[ \t]*)?[\"']?{re.escape(key)}[\"']?[ \t]*[=.\]]", text, flags=re.M)
    return str(text.count("\n", 0, match.start()) + 1) if match else "?"


def load(path: Path, command: Any, name: str) -> dict[str, Any]:
    """The file as click's default_map for `command` ({parameter name: value}); mistakes refused."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise W2SError(f"--config {printable(path)}: cannot read it ({why})") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise W2SError(f"--config {printable(path)}: not valid TOML: {exc}") from None
    names, declared, values = option_names(command), _annotations(command), {}
    for key, value in doc.items():
        where = f"--config {printable(path)} line {_line(text, key)}"
        if isinstance(value, dict):
            raise W2SError(f"{where}: '{printable(key)}' is a table; give options as top-level keys")
        if key not in names or key in NOT_IN_FILES:
            raise W2SError(f"{where}: '{printable(key)}' is not an option of w2s {name} (see w2s {name} --help)")
        param, negative = names[key]
        if param.multiple:
            value = value if isinstance(value, list) else [value]
        elif isinstance(value, list):
            raise W2SError(f"{where}: --{key} takes one value, not a list")
        if negative:
            if not isinstance(value, bool):
                raise W2SError(f"{where}: --{key} is a flag: true or false")
            value = not value
        for item in value if param.multiple else [value]:
            _check_type(item, declared.get(param.name), f"{where}: Invalid value for '--{key}'")
        values[param.name] = value
    return values


def _annotations(command: Any) -> dict[str, Any]:
    """Each parameter's type, as the command declares it (`takes` builds its signature from the option groups)."""
    try:
        parameters = inspect.signature(command.callback).parameters
    except (TypeError, ValueError):
        return {}
    return {name: p.annotation for name, p in parameters.items()}


def _check_type(value: Any, annotation: Any, said: str) -> None:
    """Refuse a TOML value whose type is not the option's: what the command line, where every value is text
    converted by the option's type, refuses too (a bool, a string or a float for a whole number, ...)."""
    if typing.get_origin(annotation) in (typing.Union, UnionType):
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = kinds[0] if len(kinds) == 1 else None
    if typing.get_origin(annotation) is list:
        annotation = typing.get_args(annotation)[0]
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        choices = [e.value for e in annotation]
        if not (isinstance(value, str) and value in choices):
            raise W2SError(f"{said}: {_shown(value)} is not one of {', '.join(choices)}")
        return
    expected = {
        bool: ((bool,), "true or false"),
        int: ((int,), "a whole number"),
        float: ((int, float), "a number"),
        str: ((str,), "a string (in quotes)"),
        Path: ((str,), "a path (a string, in quotes)"),
    }.get(annotation)
    if expected is None:  # a type this table does not know: left to click's conversion
        return
    kinds, what = expected
    if not isinstance(value, kinds) or (isinstance(value, bool) and annotation is not bool):
        raise W2SError(f"{said}: {_shown(value)} is not {what}")


def _shown(value: Any) -> str:
    """A TOML value as the file wrote it, with its TOML type."""
    if isinstance(value, bool):
        return f"{'true' if value else 'false'} (a boolean)"
    if isinstance(value, str):
        return f"{json.dumps(value)} (a string)"
    if isinstance(value, int):
        return f"{value} (an integer)"
    if isinstance(value, float):
        return f"{value!r} (a float)"
    if isinstance(value, list):
        return "a list"
    return f"{value} (a {type(value).__name__})"


def _value(argv: list[str], flag: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg[len(flag) + 1 :]
    return None


def preload(argv: list[str], app: Any) -> dict[str, Any]:
    """Keyword arguments for the click command: the default_map of --config FILE (or of sweep's --collect OUT,
    its OUT/jobs/sweep.toml), read before the command line is parsed."""
    import typer

    command = next((a for a in argv if not a.startswith("-")), None)
    path = _value(argv, "--config")
    collect = _value(argv, "--collect") if command == "sweep" else None
    if command not in COMMANDS or (path is None and collect is None):
        return {}
    if collect is not None:
        if path is not None:
            raise W2SError("--collect reads the sweep's own configuration (OUT/jobs/sweep.toml); drop --config")
        path = str(Path(collect) / "jobs" / "sweep.toml")
        if not Path(path).is_file():
            raise W2SError(f"--collect {printable(collect)}: no sweep was spread over jobs there (no {path})")
    click_command = typer.main.get_command(app).commands[command]
    return {"default_map": {command: load(Path(path), click_command, command)}}


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# repeatable options that usually take one value (run's and sweep's --weak): one value is recorded as itself, as
# a file would give it, so a one-teacher run records what it did before several teachers could be combined
ONE_OR_MANY = ("weak",)


def effective(ctx: Any) -> dict[str, Any]:
    """Each option's final value (file, command line or default) by long name: the configuration to record."""
    out = {}
    for key, (param, negative) in option_names(ctx.command).items():
        if not negative and key not in NOT_IN_FILES and param.name in ctx.params:
            value = _plain(ctx.params[param.name])
            one = key in ONE_OR_MANY and isinstance(value, list) and len(value) == 1
            out[key] = value[0] if one else value
    return out


def recording(ctx: Any) -> contextlib.AbstractContextManager[None]:
    """The command's effective configuration, recorded in every artifact made inside the block (the command's
    call: cli/flags.py `takes`; store.base_meta)."""
    return store.recording(effective(ctx))


def configuration() -> dict[str, Any]:
    """The running command's effective configuration (for the results that are not artifacts)."""
    return store.configuration() or {}


def save_configuration(path: Path, leave_out: tuple[str, ...] = ("csv", "plot", "json")) -> None:
    """The running command's effective configuration as a config file (a spread sweep's OUT/jobs/sweep.toml,
    without its outputs: `--collect OUT` names its own)."""
    kept = {k: v for k, v in configuration().items() if k not in leave_out}
    if kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dumps(kept), encoding="utf-8")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)  # strings (JSON's escapes are TOML's), integers, floats


def dumps(configuration: dict[str, Any]) -> str:
    """A configuration as a config file (None values, which TOML cannot hold, are left to their defaults)."""
    return "".join(f"{k} = {_toml(v)}\n" for k, v in configuration.items() if v is not None)
