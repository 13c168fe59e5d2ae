"""Two `w2s report --json` outputs compared, as docs/report-json-diff.md does: every key of the first (the
baseline) must be in the second, and every number must agree to `--rtol` (1e-12 relative; absolute near zero).
What differs between two runs of the same computation is left out: timings, paths, ids and dates. New keys in
the second are listed, not counted as differences.

    python examples/report_diff.py BASELINE.json NEW.json [--rtol 1e-12]

Prints one line per difference and exits 1 if there is any."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

IGNORED = {"seconds", "artifact_id", "created", "path", "command", "host", "version", "reused_from", "when"}


def walk(a: Any, b: Any, where: str, rtol: float, out: list[str], new: list[str]) -> None:
    if isinstance(a, dict):
        if not isinstance(b, dict):
            out.append(f"{where}: an object vs {type(b).__name__}")
            return
        new += [f"{where}.{k}" for k in b if k not in a]
        for k, v in a.items():
            if k in IGNORED or k.endswith("_seconds") or k.endswith("_path"):
                continue
            if k not in b:
                out.append(f"{where}.{k}: missing")
            else:
                walk(v, b[k], f"{where}.{k}", rtol, out, new)
    elif isinstance(a, list):
        if not isinstance(b, list) or len(a) != len(b):
            out.append(f"{where}: a list of {len(a)} vs {b if not isinstance(b, list) else len(b)}")
            return
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            walk(x, y, f"{where}[{i}]", rtol, out, new)
    elif isinstance(a, bool) or not isinstance(a, (int, float)):
        if a != b:
            out.append(f"{where}: {a!r} vs {b!r}")
    elif not isinstance(b, (int, float)) or isinstance(b, bool):
        out.append(f"{where}: {a!r} vs {b!r}")
    elif not math.isclose(a, b, rel_tol=rtol, abs_tol=rtol):
        out.append(f"{where}: {a!r} vs {b!r} (diff {abs(a - b):.3g})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("baseline")
    p.add_argument("new")
    p.add_argument("--rtol", type=float, default=1e-12)
    args = p.parse_args()
    with open(args.baseline) as f, open(args.new) as g:
        a, b = json.load(f), json.load(g)
    out: list[str] = []
    new: list[str] = []
    walk(a, b, "", args.rtol, out, new)
    print("\n".join(out) if out else f"same: every number to {args.rtol:g}, every key kept")
    if new:
        print("new keys: " + ", ".join(new))
    raise SystemExit(1 if out else 0)


if __name__ == "__main__":
    main()
