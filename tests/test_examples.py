"""The shipped examples run as a user would run them, and give the numbers README.md states for them."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the examples run as their own processes

ROOT = Path(__file__).resolve().parents[1]
# README and the examples both round to 3 decimals (half a unit each), plus slack for another machine's BLAS
TOL = 1.5e-3
KEYS = ("weak", "w2s", "strong_sft", "ceiling", "pgr", "pgr_se", "opr", "opr_se", "pgr_light", "opr_light")
NUM = r"(-?\d+\.\d+)"


def readme_numbers() -> dict[str, float]:
    """What README.md says the digits chain (both examples run it) gives."""
    text = " ".join((ROOT / "README.md").read_text().split())
    m = re.search(
        rf"this gives teacher accuracy {NUM}, W2S student {NUM}, strong SFT {NUM}, ceiling {NUM}; "
        rf"PGR {NUM} ± {NUM}, OPR {NUM} ± {NUM} \(label-light: {NUM} and {NUM}\)",
        text,
    )
    assert m, "README.md no longer states the digits chain's numbers in the words this test reads"
    return dict(zip(KEYS, map(float, m.groups()), strict=True))


def numbers_in(text: str, pattern: str, keys: tuple[str, ...]) -> dict[str, float]:
    m = re.search(pattern, " ".join(text.split()))
    assert m, text
    return dict(zip(keys, map(float, m.groups()), strict=True))


def library_numbers(stdout: str) -> dict[str, float]:
    """examples/library.py's printout: `accuracy: {...}`, `PGR a ± b  OPR c ± d`, `label-light prediction: {...}`."""
    lines = dict(line.split(": ", 1) for line in stdout.splitlines() if ": " in line)
    light = ast.literal_eval(lines["label-light prediction"])
    return {
        **ast.literal_eval(lines["accuracy"]),
        **numbers_in(stdout, rf"PGR {NUM} ± {NUM} OPR {NUM} ± {NUM}", KEYS[4:8]),
        "pgr_light": light["pgr"],
        "opr_light": light["opr"],
    }


def report_numbers(stdout: str) -> dict[str, float]:
    """`w2s report`'s table: the accuracy column of the four rows, and the PGR / OPR line under it."""
    rows = {"weak teacher": "weak", "W2S student": "w2s", "strong SFT": "strong_sft", "strong ceiling": "ceiling"}
    lines = stdout.splitlines()
    top = next(i for i, line in enumerate(lines) if "┃ accuracy" in line)  # the first table's header
    column = [c.strip() for c in lines[top].split("┃")].index("accuracy")
    accuracy = {}
    for line in lines[top + 1 : top + 7]:
        cells = [c.strip() for c in line.split("│")]
        if len(cells) > column and cells[1] in rows:
            accuracy[rows[cells[1]]] = float(cells[column].split("±")[0])
    assert set(accuracy) == set(rows.values()), stdout
    pattern = rf"PGR = {NUM} ± {NUM} OPR = {NUM} ± {NUM} \(label-light predictions: PGR {NUM}, OPR {NUM}\)"
    return {**accuracy, **numbers_in(stdout, pattern, KEYS[4:])}


def assert_readme_numbers(got: dict[str, float]) -> None:
    stated = readme_numbers()
    assert set(got) == set(KEYS), got
    for key in KEYS:
        assert got[key] == pytest.approx(stated[key], abs=TOL), (key, got[key], stated[key])


def test_library_example(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "library.py"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert_readme_numbers(library_numbers(done.stdout))
    assert "ridgeless = numpy lstsq: True" in done.stdout


def test_pipeline_example(tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", str(ROOT / "examples" / "pipeline.sh")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert_readme_numbers(report_numbers(done.stdout))
    assert (tmp_path / "w2s-digits" / "spectra.png").read_bytes()[:4] == b"\x89PNG"
