"""The shipped examples run as a user would run them."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_library_example(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "library.py"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "PGR" in done.stdout and "ridgeless = numpy lstsq: True" in done.stdout and "label-light" in done.stdout


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
    assert "W2S student" in done.stdout and (tmp_path / "w2s-digits" / "spectra.png").exists()
