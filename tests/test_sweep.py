"""`w2s sweep` and `w2s rank-teachers` on digits with tiny random-weight timm models."""

import csv
import itertools
import json
import shutil

import pytest
from conftest import QUIET, TINY_MODELS, TINY_SIZES, assert_user_error, seed_run_dir, w2s

from w2s_cli import W2SError
from w2s_cli.options import BackboneSpec, DataOptions, RunOptions, SplitOptions, SubspaceOptions
from w2s_cli.stages.summary import load_result, summary
from w2s_cli.store.cache import slug
from w2s_cli.studies.sweep import parse_vary, sweep

MODELS, SMALL = TINY_MODELS, TINY_SIZES  # the session's tiny_run: its embeddings are reused below


@pytest.mark.slow
def test_sweep_points_csv_plot_and_json(tmp_path):
    r = w2s(
        "sweep",
        *MODELS,
        *SMALL,
        "--vary",
        "n-pseudo=300,600",
        "--vary",
        "label-noise=0,0.2",
        "--trials",
        2,
        "--out-dir",
        tmp_path,
        "--csv",
        tmp_path / "s.csv",
        "--plot",
        tmp_path / "s.png",
        "--json",
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["vary"] == ["n-pseudo", "label-noise"] and len(out["points"]) == 4
    params = [p["params"] for p in out["points"]]
    assert params[0] == {"n-pseudo": "300", "label-noise": "0"} and params[-1] == {
        "n-pseudo": "600",
        "label-noise": "0.2",
    }
    for p in out["points"]:
        s = p["summary"]
        assert s["trials"] == 2 and s["n_pseudo"] == int(p["params"]["n-pseudo"]) and s["pgr_stderr"] is not None
        assert s["label_noise"]["rate"] == float(p["params"]["label-noise"])
    rows = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert len(rows) == 4
    for col in (
        "n-pseudo",
        "label-noise",
        "d_w",
        "d_s",
        "d_sw",
        "error_w2s",
        "error_w2s_se",
        "error_w2s_predicted",
        "variance_w2s_exact",
        "variance_w2s_theory",
        "pgr",
        "pgr_se",
        "opr",
        "opr_se",
        "pgr_predicted",
        "pgr_theory",
        "accuracy_weak",
    ):
        assert col in rows[0], col
    assert float(rows[0]["d_w"]) == 20 and (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    # the embeddings were extracted once, for both models, and shared by all 4 x 2 trials
    assert sorted(p.name for p in (tmp_path / "embeddings").iterdir()) == [
        "test_efficientnet-32px.safetensors",
        "test_resnet-32px.safetensors",
    ]


@pytest.mark.slow
def test_run_and_sweep_share_embeddings_and_check_sizes_before_extracting(tiny_run, tmp_path):
    # the run is the session's tiny_run (MODELS, SMALL, N = 300) in a fresh folder, made once: copied here
    assert tiny_run.summary["seconds"]["extract_weak"] > 0 and tiny_run.summary["seconds"]["extract_strong"] > 0
    shutil.copytree(tiny_run.folder, tmp_path, dirs_exist_ok=True)
    small = [*MODELS, *SMALL, "--n-pseudo", 300, "--out-dir", tmp_path]
    made = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    assert made == sorted(p.name for p in tiny_run.folder.glob("*.safetensors"))
    r = w2s("sweep", *small, "--vary", "label-noise=0,0.1", "--trials", 2)
    assert r.exit_code == 0, r.output
    reused = [line for line in r.stderr.splitlines() if line.startswith("reusing")]
    assert len(reused) == 2 and not (tmp_path / "embeddings").exists()  # the run's files, each said once
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == made
    # sizes the samples cannot hold, or flips above 1, are refused before any extraction
    new = tmp_path / "new"
    for args, pattern in (
        (["--n-test", 2000], "these embeddings hold 1797 samples in all"),
        (["--n-pseudo", 300, "--label-noise", 1.5], "at most 1, got 1.5"),
    ):
        assert_user_error(w2s("run", *MODELS, *SMALL, *args, "--out-dir", new), pattern)
        assert_user_error(w2s("sweep", *MODELS, *SMALL, *args, "--vary", "n-pseudo=300", "--out-dir", new), pattern)
        assert not new.exists()


@pytest.mark.slow
def test_a_killed_sweep_resumes_without_redoing_finished_trials(tiny_run, tmp_path):
    seed_run_dir(tiny_run, tmp_path)  # the embeddings (the sweep reuses a run's): what is killed is the trials
    data = DataOptions("digits")
    base = RunOptions(
        weak=BackboneSpec("test_efficientnet", 32, pretrained=False),
        strong=BackboneSpec("test_resnet", 32, pretrained=False),
        split=SplitOptions(n_labeled=200, n_test=300, n_pseudo=400),
        weak_subspace=SubspaceOptions("20"),
        strong_subspace=SubspaceOptions("20"),
        trials=2,
    )
    varies = [parse_vary("n-pseudo=300,600")]

    def killer(done, total, key):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep(tmp_path, data, base, QUIET, varies, progress=killer)
    finished = sorted((tmp_path / "points").glob("*/trial-*/result.safetensors"))
    assert len(finished) == 3
    stamps = {p: p.stat().st_mtime_ns for p in finished}
    seen = []
    result = sweep(tmp_path, data, base, QUIET, varies, progress=lambda d, t, k: seen.append(d))
    assert len(result.points) == 2 and seen == [1, 2, 3, 4]
    assert all(p.stat().st_mtime_ns == stamps[p] for p in finished)  # not redone
    assert len(sorted((tmp_path / "points").glob("*/trial-*/result.safetensors"))) == 4


def test_bad_vary_values_are_refused(tmp_path):
    for text, pattern in (
        ("n-pseudo", "expected PARAM=V1"),
        ("width=1,2", "expected PARAM=V1"),
        ("n-pseudo=10,x", "not valid for n-pseudo"),
        ("n-pseudo=10,10", "repeated"),
        ("label-noise=-0.1", "not valid"),
        ("subspace=auto,lots", "--subspace"),
    ):
        with pytest.raises(W2SError, match=pattern):
            parse_vary(text)
    assert_user_error(w2s("sweep", *SMALL, "--vary", "n-labeled=5000", "--out-dir", tmp_path), "--n-labeled 5000")
    assert_user_error(w2s("sweep", *SMALL, "--out-dir", tmp_path), "Missing option '--vary'")


@pytest.mark.slow
def test_rank_teachers_predicts_and_measures(tiny_run, tmp_path):
    """Three teachers ranked, predicted and measured; then with their combinations as candidates."""
    seed_run_dir(tiny_run, tmp_path)  # test_efficientnet@32 and test_resnet@32 reused; the @24 ones extracted
    weak = ["--weak", "test_efficientnet@32", "--weak", "test_efficientnet@24", "--weak", "test_resnet@24"]
    args = ["rank-teachers", "--strong", "test_resnet@32", *weak, "--no-pretrained", *SMALL, "--n-pseudo", 600]
    r = w2s(*args, "--out-dir", tmp_path, "--measure", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert len(out["teachers"]) == 3 and {t["weak"] for t in out["teachers"]} == {
        "test_efficientnet@32",
        "test_efficientnet@24",
        "test_resnet@24",
    }
    errors = [t["predicted"]["error_w2s"] for t in out["teachers"]]
    assert errors == sorted(errors)  # ranked by predicted W2S error
    for t in out["teachers"]:
        assert set(t) >= {"weak", "d_w", "d_sw", "predicted", "measured"}
        assert set(t["predicted"]) >= {"error_w2s", "pgr", "opr"} and set(t["measured"]) >= {"error_w2s", "pgr", "opr"}
    assert out["spearman"] is not None and -1 <= out["spearman"] <= 1 and "near_ties" in out
    table = w2s(*args, "--out-dir", tmp_path)
    assert table.exit_code == 0 and "ranked by predicted W2S" in table.stdout and "measured" not in table.stdout
    assert_user_error(
        w2s("rank-teachers", "--strong", "test_resnet@32", "--weak", "test_resnet@24", *SMALL, "--out-dir", tmp_path),
        "at least two",
    )
    # combined candidates (issue 26): each pair and all three under mean and stack, ranked with the teachers;
    # each one's label-light prediction is the one fit-student's analysis makes of `pseudolabel --combine`'s
    # artifact on the same split (--measure's pipeline); the singles' trials are reused
    r = w2s(*args, "--combine", "mean", "--combine", "stack", "--pairs", "--out-dir", tmp_path, "--measure", "--json")
    assert r.exit_code == 0, r.output
    ranked = json.loads(r.stdout)
    names = [t["weak"] for t in ranked["teachers"]]
    members = [w for w in weak if w != "--weak"]
    groups = [*(f"{a}+{b}" for a, b in itertools.combinations(members, 2)), "+".join(members)]
    assert sorted(names) == sorted([*members, *(f"{rule}({g})" for rule in ("mean", "stack") for g in groups)])
    errors = [t["predicted"]["error_w2s"] for t in ranked["teachers"]]
    assert errors == sorted(errors) and ranked["spearman"] > 0.5
    for t in ranked["teachers"]:
        if "(" not in t["weak"]:
            assert t == next(u for u in out["teachers"] if u["weak"] == t["weak"])  # unchanged by the candidates
            continue
        result = tmp_path / "teachers" / slug(t["weak"]) / "result.safetensors"
        pipeline = summary(load_result(result))
        assert pipeline.theory.predicted.error["w2s"] == pytest.approx(t["predicted"]["error_w2s"], rel=1e-6)
        pgr = t["predicted"]["pgr"]  # undefined in both when its denominator is within noise of zero
        assert pipeline.theory.predicted.pgr == (None if pgr is None else pytest.approx(pgr, rel=1e-6))
        parts = t["weak"].partition("(")[2].removesuffix(")").split("+")
        assert t["d_w"] == sum(u["d_w"] for u in out["teachers"] if u["weak"] in parts)
    for extra, said in (
        (("--combine", "confident"), "not linear in the teachers' labels"),
        (("--pairs",), "--pairs goes with --combine"),
        (("--combine", "mean", "--combine", "mean"), "given twice"),
        (("--combine", "median"), "takes mean or stack"),
    ):
        assert_user_error(w2s(*args, *extra, "--out-dir", tmp_path / "refused"), said)
    assert not (tmp_path / "refused").exists()
