"""Every subcommand through the real entry point, and the documented shell pipe as subprocesses."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_user_error, digit_image, digits, w2s

from w2s_cli.store import artifact as store

pytestmark = pytest.mark.slow  # the session extractions, a real run chain and the shell pipe as subprocesses


def extract_random(data, model, out, *extra):
    """`w2s extract` with a seeded random-weight timm model at 32 px, no loader workers, no progress bar."""
    args = ["--data", data, "--model", model, "--no-pretrained", "--image-size", 32, "--num-workers", 0, "-q"]
    return w2s("extract", *args, *extra, "-o", out)


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
        "fit-student", "--strong", strong_emb, "--subspace", "60", "-o", d / "r.safetensors", input=pseudo.stdout
    )
    assert result.exit_code == 0, result.output
    stages = (("teacher", teacher), ("pseudo", pseudo), ("result", result))
    return {**{k: Path(r.stdout.strip()) for k, r in stages}, "stdout": {k: r.stdout for k, r in stages}}


def test_stages_print_only_their_artifact_path(chain, session_dir):
    """Into a pipe, each stage's stdout is one line: the path of the artifact it wrote (-o), nothing else."""
    for key, kind, name in (("teacher", "teacher", "t"), ("pseudo", "pseudolabels", "p"), ("result", "result", "r")):
        written = session_dir / "chain" / f"{name}.safetensors"
        assert chain["stdout"][key] == f"{written}\n", chain["stdout"][key]
        assert store.read_meta(written)["kind"] == kind


def test_stored_split_is_disjoint_and_recorded(chain):
    t = store.load(chain["teacher"], "teacher")
    p = store.load(chain["pseudo"], "pseudolabels")
    test, lab, drawn = set(t["test_rows"]), set(t["labeled_rows"]), set(t["pseudo_rows"])
    assert len(test) == 300 and len(lab) == 300 and not (test & lab) and not (drawn & (test | lab))
    assert len(drawn) == 1797 - 600  # train-weak without --n-pseudo draws the whole pool
    assert set(p["pseudo_rows"]) <= drawn and len(p["pseudo_rows"]) == 900
    assert t.meta["subspace"]["dim"] == 40 and t.meta["split"]["seed"] == 0
    assert p.meta["labels"] == "soft" and p["pseudo_labels"].shape == (900, 10)
    assert t["basis"].shape == (256, 40) and t["basis"].dtype == np.float64


def test_train_weak_knows_whether_n_pseudo_was_given_without_reading_argv(weak_emb, tmp_path, monkeypatch):
    """A caller that does not go through sys.argv (here click's runner): an --n-pseudo equal to the default is
    still the user's N (and too many here), no --n-pseudo draws the whole pool."""
    from typer.testing import CliRunner

    from w2s_cli.cli.app import app

    monkeypatch.setattr(sys, "argv", ["w2s"])
    args = ["train-weak", str(weak_emb), "--n-labeled", "300", "--n-test", "300", "--subspace", "5"]
    given = CliRunner().invoke(app, [*args, "--n-pseudo", "8000", "-o", str(tmp_path / "a.safetensors")])
    assert "larger than the 1197 training samples" in str(given.exception)
    plain = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "b.safetensors")])
    assert plain.exit_code == 0, plain.output
    assert store.read_meta(tmp_path / "b.safetensors")["split"]["n_pseudo"] == 1797 - 600


def test_report_json_contract(chain):
    r = w2s("report", chain["result"], "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    for key in ("weak", "w2s", "strong_sft", "ceiling"):
        assert s["error"][key] > 0 and 0 <= s["accuracy"][key] <= 1
        assert set(s["variance"][key]) == {"exact", "theory", "ratio"}
        parts = s["decomposition"][key]
        assert parts["noise"] + parts["bias"] + parts["variance"] == pytest.approx(s["error"][key])
        assert s["predicted"]["error"][key] > 0
    assert (s["n_labeled"], s["n_pseudo"], s["n_test"]) == (300, 900, 300)
    e = s["error"]
    if s["pgr"] is not None:
        assert s["pgr"] == pytest.approx((e["weak"] - e["w2s"]) / (e["weak"] - e["ceiling"]))
        assert s["pgr_stderr"] > 0
    assert s["opr"] == pytest.approx(e["strong_sft"] / e["w2s"]) and s["opr_stderr"] > 0
    assert set(s["dimensions"]) >= {"d_w", "d_s", "d_sw", "d_sw_null", "d_sw_corrected", "basis"}
    assert s["dimensions"]["d_w"] == 40 and s["dimensions"]["d_s"] == 60
    assert {"pgr", "opr"} <= set(s["predicted"]) and s["label_noise"]["rate"] == 0
    table = w2s("report", chain["result"])
    assert "W2S student" in table.stdout and "PGR" in table.stdout and "exact-design variance" in table.stdout
    md = w2s("report", chain["result"], "--markdown")
    assert md.stdout.startswith("**W2S on digits") and "| model |" in md.stdout


def test_soft_and_hard_pseudo_labels(chain, session_dir):
    hard = w2s("pseudolabel", chain["teacher"], "--hard", "--n-pseudo", 100, "-o", session_dir / "h.safetensors")
    assert hard.exit_code == 0, hard.output
    labels = store.load(Path(hard.stdout.strip()))["pseudo_labels"]
    assert set(np.unique(labels)) == {0.0, 1.0} and (labels.sum(1) == 1).all()


def test_pseudolabel_takes_the_teachers_stored_test_outputs(chain, tmp_path):
    """train-weak stores the teacher's test outputs and pseudolabel passes on those stored (shown with a copy
    whose stored outputs were shifted); a teacher written before they were stored (the same artifact without
    them) gets them computed again, to the same numbers."""
    teacher, pseudo = store.load(chain["teacher"]), store.load(chain["pseudo"])
    assert teacher.shape("test_output") == (len(teacher["test_rows"]), 10)
    np.testing.assert_array_equal(pseudo["weak_test_output"], teacher["test_output"])
    tensors = {k: teacher[k] for k in teacher.names()}
    for name, stored in (("shifted", teacher["test_output"] + 1), ("old", None)):
        copy = (
            {**tensors, "test_output": stored}
            if stored is not None
            else {k: v for k, v in tensors.items() if k != "test_output"}
        )
        t = store.save(store.Artifact("teacher", teacher.meta, copy), tmp_path / f"{name}-teacher.safetensors")
        made = w2s("pseudolabel", t, "--n-pseudo", 900, "-o", tmp_path / f"{name}-p.safetensors")
        assert made.exit_code == 0, made.output
        expected = teacher["test_output"] + 1 if stored is not None else teacher["test_output"]
        np.testing.assert_array_equal(store.load(tmp_path / f"{name}-p.safetensors")["weak_test_output"], expected)


def test_mismatched_artifacts_are_refused(chain, session_dir):
    other = session_dir / "other.safetensors"
    r = extract_random("digits", "test_resnet", other, "--limit", 500)
    assert r.exit_code == 0, r.output
    assert_user_error(w2s("fit-student", chain["pseudo"], "--strong", other), "hold different samples")
    assert_user_error(w2s("pseudolabel", chain["teacher"], "--embeddings", other), "not the embeddings")
    assert_user_error(w2s("report", chain["teacher"]), "is a 'teacher' artifact, expected result")
    assert_user_error(w2s("fit-student", chain["teacher"], "--strong", other), "expected pseudolabels")


def test_bad_input_gets_one_line_and_no_output(weak_emb, tmp_path):
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
        (("extract", "--data", "digits", "--model", "test_resnet", "--device", "tpu", "-o", out), "--device"),
        (("train-weak",), "missing weak embeddings"),
    ]
    for args, pattern in cases:
        assert_user_error(w2s(*args, input=""), pattern)
        assert not out.exists()


def test_nan_embeddings_are_refused(weak_emb, tmp_path):
    art = store.load(weak_emb)
    X = art["embeddings"].copy()
    X[5:, 3] = np.nan
    tensors = {k: art[k] for k in art.names()}
    tensors["embeddings"] = X
    meta = {k: v for k, v in art.meta.items() if k not in ("artifact_id", "content_sha256")}
    bad = store.save(store.Artifact("embeddings", meta, tensors), tmp_path / "nan.safetensors")
    r = w2s("train-weak", bad, "--n-test", 300, "-o", tmp_path / "t.safetensors")
    assert_user_error(r, "hold NaN or inf")
    assert "weak embeddings" in r.stderr and "nan.safetensors" in r.stderr
    assert not (tmp_path / "t.safetensors").exists()


def test_corrupt_image_in_folder_with_and_without_workers(tmp_path):
    (tmp_path / "data" / "cats").mkdir(parents=True)
    (tmp_path / "data" / "cats" / "1.png").write_bytes(b"not an image")
    for workers in (0, 1):
        r = extract_random(
            f"folder:{tmp_path / 'data'}", "test_resnet", tmp_path / "e.safetensors", "--num-workers", workers
        )
        assert_user_error(r, "cannot read image")
        assert not (tmp_path / "e.safetensors").exists()


def test_folder_extract_with_workers(image_folder, tmp_path):
    r = extract_random(f"folder:{image_folder}", "test_resnet", tmp_path / "f.safetensors", "--num-workers", 1)
    assert r.exit_code == 0, r.output
    art = store.load(tmp_path / "f.safetensors")
    assert art.shape("embeddings")[0] == 90 and art["split"].sum() == 18


def test_the_documented_shell_pipe(session_dir, weak_emb, strong_emb):
    """`w2s train-weak weak | w2s pseudolabel | w2s fit-student --strong strong | w2s report --json`."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    cmd = (
        f"w2s train-weak {weak_emb} --n-labeled 200 --n-test 300 --n-pseudo 1000 --subspace 30"
        f" -o {session_dir}/pipe.teacher.safetensors"
        f" | w2s pseudolabel | w2s fit-student --strong {strong_emb} --subspace 60"
        " | w2s report --json"
    )
    done = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    s = json.loads(done.stdout)
    assert s["n_pseudo"] == 1000 and s["n_labeled"] == 200
    assert s["accuracy"]["ceiling"] > 0.8  # pretrained lite0 on digits: the pipe carries real results


def test_regression_task_end_to_end(tmp_path):
    """csv:PATH with a numeric target: the pipe runs, errors are squared errors, no accuracy is claimed."""
    lines = ["path,target"]
    for i in range(240):
        digit_image(i).save(tmp_path / f"{i}.png")
        lines.append(f"{i}.png,{float(digits().target[i])}")
    (tmp_path / "data.csv").write_text("\n".join(lines) + "\n")
    for name, model in (("weak", "test_efficientnet"), ("strong", "test_resnet")):
        r = extract_random(f"csv:{tmp_path / 'data.csv'}", model, tmp_path / f"{name}.safetensors")
        assert r.exit_code == 0, r.output
    assert store.load(tmp_path / "weak.safetensors")["targets"].dtype == np.float64
    t = w2s(
        "train-weak",
        tmp_path / "weak.safetensors",
        "--n-labeled",
        60,
        "--n-test",
        60,
        "--subspace",
        10,
        "--label-noise",
        0.5,
    )
    assert t.exit_code == 0, t.output
    p = w2s("pseudolabel", "--n-pseudo", 100, input=t.stdout)
    assert_user_error(w2s("pseudolabel", "--hard", input=t.stdout), "--hard needs a classification dataset")
    f = w2s("fit-student", "--strong", tmp_path / "strong.safetensors", "--subspace", 10, input=p.stdout)
    assert f.exit_code == 0, f.output
    s = json.loads(w2s("report", "--json", input=f.stdout).stdout)
    assert "accuracy" not in s and s["task"] == "regression" and s["label_noise"]["kind"] == "gaussian"
    assert all(np.isfinite(v) and v > 0 for v in s["error"].values())
    assert_user_error(
        w2s("train-weak", tmp_path / "weak.safetensors", "--solver", "logistic", "--n-test", 60),
        "needs a classification dataset",
    )


def test_a_moved_run_folder_still_resolves_its_references(weak_emb, strong_emb, tmp_path):
    """Results record their inputs relative to their own folder too: move everything, and the chain
    (recorded weak embeddings included) still resolves, with content ids recorded."""
    import shutil

    src = tmp_path / "run"
    src.mkdir()
    for name, path in (("weak", weak_emb), ("strong", strong_emb)):
        shutil.copy(path, src / f"{name}.safetensors")
    t = w2s(
        "train-weak",
        src / "weak.safetensors",
        "--n-labeled",
        300,
        "--n-test",
        300,
        "--subspace",
        20,
        "-o",
        src / "t.safetensors",
    )
    assert t.exit_code == 0, t.output
    moved = tmp_path / "moved"
    shutil.move(src, moved)
    p = w2s("pseudolabel", moved / "t.safetensors", "--n-pseudo", 500, "-o", moved / "p.safetensors")
    assert p.exit_code == 0, p.output
    r = w2s(
        "fit-student",
        moved / "p.safetensors",
        "--strong",
        moved / "strong.safetensors",
        "--subspace",
        20,
        "-o",
        moved / "r.safetensors",
    )
    assert r.exit_code == 0 and "no theory analysis" not in r.stderr, r.output
    meta = store.read_meta(moved / "r.safetensors")
    assert meta["weak_embeddings"]["relpath"] == "weak.safetensors"
    assert meta["strong_embeddings"]["artifact_id"] == store.read_meta(moved / "strong.safetensors")["artifact_id"]
    assert meta["fits"]["w2s"]["rank"] == 20 and meta["fits"]["w2s"]["condition_number"] > 1
