"""Every subcommand through the real CLI (typer's runner), and the documented shell pipe as subprocesses."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from w2s_cli import artifacts
from w2s_cli.cli import app

runner = CliRunner()


def w2s(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def extract_random(data, model, out, *extra):
    """`w2s extract` with a seeded random-weight timm model at 32 px, no loader workers, no progress bar."""
    args = ["--data", data, "--model", model, "--no-pretrained", "--image-size", 32, "--num-workers", 0, "-q"]
    return w2s("extract", *args, *extra, "-o", out)


def assert_user_error(result, pattern):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("w2s: error:"), result.stderr
    assert pattern in lines[0], lines[0]
    assert result.stdout == ""


@pytest.fixture(scope="module")
def chain(session_dir, weak_emb, strong_emb):
    """train-weak -> pseudolabel -> fit-student on digits, each stage's path passed along."""
    d = session_dir / "chain"
    teacher = w2s(
        "train-weak", weak_emb, "--n-labeled", 300, "--n-test", 300, "--subspace", "40", "-o", d / "t.safetensors"
    )
    assert teacher.exit_code == 0, teacher.output
    pseudo = w2s("pseudolabel", "--n-pseudo", 900, "-o", d / "p.safetensors", input=teacher.stdout)
    assert pseudo.exit_code == 0, pseudo.output
    result = w2s(
        "fit-student", "--strong", strong_emb, "--subspace", "auto", "-o", d / "r.safetensors", input=pseudo.stdout
    )
    assert result.exit_code == 0, result.output
    return {
        "teacher": Path(teacher.stdout.strip()),
        "pseudo": Path(pseudo.stdout.strip()),
        "result": Path(result.stdout.strip()),
    }


def test_stages_print_only_their_artifact_path(chain):
    for kind, path in (("teacher", chain["teacher"]), ("pseudolabels", chain["pseudo"]), ("result", chain["result"])):
        assert artifacts.read_meta(path)["kind"] == kind


def test_stored_split_is_disjoint_and_recorded(chain):
    t = artifacts.load(chain["teacher"], "teacher")
    p = artifacts.load(chain["pseudo"], "pseudolabels")
    test, lab, pool = set(t["test_rows"]), set(t["labeled_rows"]), set(t["pool_rows"])
    assert len(test) == 300 and len(lab) == 300 and not (test & lab) and not (pool & (test | lab))
    assert set(p["pseudo_rows"]) <= pool and len(p["pseudo_rows"]) == 900
    assert t.meta["subspace"]["dim"] == 40 and t.meta["split"]["seed"] == 0
    assert p.meta["labels"] == "soft" and p["pseudo_labels"].shape == (900, 10)


def test_report_json_contract(chain):
    r = w2s("report", chain["result"], "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    for key in ("weak", "w2s", "strong_sft", "ceiling"):
        assert s["error"][key] > 0 and 0 <= s["accuracy"][key] <= 1
    assert (s["n_labeled"], s["n_pseudo"], s["n_test"]) == (300, 900, 300)
    assert "pgr" in s and "opr" in s
    e = s["error"]
    if s["pgr"] is not None:
        assert s["pgr"] == pytest.approx((e["weak"] - e["w2s"]) / (e["weak"] - e["ceiling"]))
    assert s["opr"] == pytest.approx(e["strong_sft"] / e["w2s"])
    assert s["theory"]["available"] and s["theory"]["inputs"]["d_w"] == 40
    assert s["theory"]["sigma2"] > 0
    assert set(s["theory"]["predicted"]["test_error"]) == {"weak", "w2s", "strong_sft", "ceiling"}
    table = w2s("report", chain["result"])
    assert "W2S student" in table.stdout and "PGR" in table.stdout
    md = w2s("report", chain["result"], "--markdown")
    assert md.stdout.startswith("| model |")


def test_soft_and_hard_pseudo_labels(chain, session_dir):
    hard = w2s("pseudolabel", chain["teacher"], "--hard", "--n-pseudo", 100, "-o", session_dir / "h.safetensors")
    assert hard.exit_code == 0, hard.output
    labels = artifacts.load(Path(hard.stdout.strip()))["pseudo_labels"]
    assert set(np.unique(labels)) == {0.0, 1.0} and (labels.sum(1) == 1).all()


def test_mismatched_artifacts_are_refused(chain, session_dir, weak_weights):
    other = session_dir / "other.safetensors"
    r = extract_random("digits", "test_resnet", other, "--limit", 500)
    assert r.exit_code == 0, r.output
    assert_user_error(w2s("fit-student", chain["pseudo"], "--strong", other), "hold different samples")
    assert_user_error(w2s("pseudolabel", chain["teacher"], "--embeddings", other), "not the embeddings this teacher")
    assert_user_error(w2s("report", chain["teacher"]), "is a 'teacher' artifact, expected result")
    assert_user_error(w2s("fit-student", chain["teacher"], "--strong", other), "expected pseudolabels")


def test_bad_input_gets_one_line_and_no_output(session_dir, weak_emb, tmp_path):
    out = tmp_path / "x.safetensors"
    cases = [
        (("train-weak", tmp_path / "missing.safetensors", "-o", out), "no such file"),
        (("train-weak", weak_emb, "--n-labeled", 5000, "--n-test", 100, "-o", out), "--n-labeled 5000"),
        (("train-weak", weak_emb, "--solver", "magic", "-o", out), "--solver"),
        (("train-weak", weak_emb, "--subspace", "lots", "-o", out), "--subspace"),
        (("extract", "--data", "mnist-ish", "--model", "test_resnet", "-o", out), "unknown data SPEC"),
        (("extract", "--data", "digits", "--model", "no_such_net", "-o", out), "unknown timm model"),
        (
            ("extract", "--data", "digits", "--model", "test_resnet", "--weights", tmp_path / "nope.pth", "-o", out),
            "no such file",
        ),
        (
            (
                "extract",
                "--data",
                "digits",
                "--model",
                "test_resnet",
                "--device",
                "cuda" if not _cuda() else "tpu",
                "-o",
                out,
            ),
            "--device",
        ),
        (("train-weak",), "missing weak embeddings"),
    ]
    for args, pattern in cases:
        assert_user_error(w2s(*args, input=""), pattern)
        assert not out.exists()


def _cuda():
    import torch

    return torch.cuda.is_available()


def test_nan_embeddings_are_refused(weak_emb, tmp_path):
    art = artifacts.load(weak_emb)
    art.tensors["embeddings"] = art["embeddings"].copy()
    art.tensors["embeddings"][5, 3] = np.nan
    bad = artifacts.save(art, tmp_path / "nan.safetensors")
    assert_user_error(w2s("train-weak", bad, "-o", tmp_path / "t.safetensors"), "NaN")
    assert not (tmp_path / "t.safetensors").exists()


def test_corrupt_image_in_folder(tmp_path):
    (tmp_path / "data" / "cats").mkdir(parents=True)
    (tmp_path / "data" / "cats" / "1.png").write_bytes(b"not an image")
    r = extract_random(f"folder:{tmp_path / 'data'}", "test_resnet", tmp_path / "e.safetensors")
    assert_user_error(r, "cannot read image")
    assert not (tmp_path / "e.safetensors").exists()


def test_folder_extract_with_workers(image_folder, tmp_path):
    r = extract_random(f"folder:{image_folder}", "test_resnet", tmp_path / "f.safetensors", "--num-workers", 1)
    assert r.exit_code == 0, r.output
    art = artifacts.load(tmp_path / "f.safetensors")
    assert art["embeddings"].shape[0] == 90 and art["split"].sum() == 18


def test_the_documented_shell_pipe(session_dir, weak_emb, strong_emb):
    """`w2s train-weak weak | w2s pseudolabel | w2s fit-student --strong strong | w2s report --json`."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    cmd = (
        f"w2s train-weak {weak_emb} --n-labeled 200 --n-test 300 --subspace 30"
        f" -o {session_dir}/pipe.teacher.safetensors"
        f" | w2s pseudolabel --n-pseudo 1000 | w2s fit-student --strong {strong_emb} --subspace 60"
        " | w2s report --json"
    )
    done = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    s = json.loads(done.stdout)
    assert s["n_pseudo"] == 1000 and s["n_labeled"] == 200
    assert s["accuracy"]["ceiling"] > 0.8  # pretrained lite0 on digits: the pipe carries real results


def test_regression_task_end_to_end(tmp_path):
    """csv:PATH with a numeric target: the pipe runs, errors are squared errors, no accuracy is claimed."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    lines = ["path,target"]
    for i in range(240):
        Image.fromarray((d.images[i] * 15).astype(np.uint8)).save(tmp_path / f"{i}.png")
        lines.append(f"{i}.png,{float(d.target[i])}")
    (tmp_path / "data.csv").write_text("\n".join(lines) + "\n")
    for name, model in (("weak", "test_efficientnet"), ("strong", "test_resnet")):
        r = extract_random(f"csv:{tmp_path / 'data.csv'}", model, tmp_path / f"{name}.safetensors")
        assert r.exit_code == 0, r.output
    assert artifacts.load(tmp_path / "weak.safetensors")["targets"].dtype == np.float64
    t = w2s("train-weak", tmp_path / "weak.safetensors", "--n-labeled", 60, "--n-test", 60, "--subspace", 10)
    p = w2s("pseudolabel", "--n-pseudo", 100, input=t.stdout)
    assert_user_error(w2s("pseudolabel", "--hard", input=t.stdout), "--hard needs a classification dataset")
    f = w2s("fit-student", "--strong", tmp_path / "strong.safetensors", "--subspace", 10, input=p.stdout)
    assert f.exit_code == 0, f.output
    s = json.loads(w2s("report", "--json", input=f.stdout).stdout)
    assert "accuracy" not in s and s["task"] == "regression"
    assert all(np.isfinite(v) and v > 0 for v in s["error"].values())
    assert_user_error(
        w2s("train-weak", tmp_path / "weak.safetensors", "--solver", "logistic", "--n-test", 60),
        "needs a classification dataset",
    )
