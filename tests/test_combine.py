"""Several weak teachers combined (`pseudolabel T1 T2 --combine RULE`) and their theory (stages/combine.py,
numerics/variance.py Ensemble), on synthetic embeddings of known structure: fast, no network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_user_error, embeddings_artifact, latent_embeddings, w2s

from w2s_cli.numerics.moments import Moments
from w2s_cli.numerics.solvers import fit_rows
from w2s_cli.numerics.variance import Ensemble, W2SMap, variance_coefficient, w2s_loo_residuals
from w2s_cli.stages.combine import simplex_least_squares
from w2s_cli.stages.design import Design
from w2s_cli.store import artifact as store

M = 2400
SPLIT = ["--n-labeled", "150", "--n-pseudo", "1200", "--n-test", "600"]


def _views(folder: Path, labels_seed: int | None = None) -> dict[str, Path]:
    """Strong and two weak views of the same samples (shared latent directions); labels from the latent.
    labels_seed: the labels of every row but the first split's labelled rows scrambled (same for all views)."""
    rng = np.random.default_rng(0)
    S, W, z = latent_embeddings(M, 24, 16, 8, 48, 40, noise=0.05, seed=0)
    labels = (z[:, :3] @ rng.normal(size=(3, 4))).argmax(1)
    W2 = np.hstack([z, rng.normal(size=(M, 8))]) @ np.linalg.qr(rng.normal(size=(36, 16)))[0].T
    W2 = W2 + 0.05 * rng.normal(size=W2.shape)
    if labels_seed is not None:
        labels = labels.copy()
        keep = _labeled_rows()
        others = np.setdiff1d(np.arange(M), keep)
        labels[others] = np.random.default_rng(labels_seed).permutation(labels[others])
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, X in (("s", S), ("w1", W), ("w2", W2)):
        out[name] = embeddings_artifact(folder / f"{name}.safetensors", X, labels, name)
    return out


def _labeled_rows() -> np.ndarray:
    from w2s_cli.options import SplitOptions
    from w2s_cli.stages.split import draw_split

    return draw_split(M, None, SplitOptions(n_labeled=150, n_pseudo=1200, n_test=600), None).labeled


def _teachers(folder: Path, views: dict[str, Path], *extra: str) -> tuple[Path, Path]:
    for k in ("w1", "w2"):
        r = w2s("train-weak", views[k], *SPLIT, *extra, "-o", folder / f"t-{k}.safetensors")
        assert r.exit_code == 0, r.output
    return folder / "t-w1.safetensors", folder / "t-w2.safetensors"


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("combine")
    views = _views(d)
    t1, t2 = _teachers(d, views)
    return {**views, "t1": t1, "t2": t2, "dir": d}


def _combine(made, rule: str, *teachers: Path, out: str) -> Path:
    path = made["dir"] / out
    r = w2s("pseudolabel", *teachers, "--combine", rule, "-o", path)
    assert r.exit_code == 0, r.output
    return path


def test_mean_of_identical_teachers_is_the_teacher(made) -> None:
    one = made["dir"] / "p-one.safetensors"
    assert w2s("pseudolabel", made["t1"], "-o", one).exit_code == 0
    twice = _combine(made, "mean", made["t1"], made["t1"], out="p-twice.safetensors")
    a, b = store.load(one), store.load(twice)
    for key in ("pseudo_labels", "weak_test_output", "pseudo_rows", "labeled_observed"):
        assert np.array_equal(np.asarray(a[key]), np.asarray(b[key])), key
    results = []
    for p in (one, twice):
        out = p.with_suffix(".result.safetensors")
        assert w2s("fit-student", p, "--strong", made["s"], "-o", out).exit_code == 0
        results.append(json.loads(w2s("report", out, "--json").stdout))
    single, double = results
    for k in ("weak", "w2s", "strong_sft", "ceiling"):
        assert double["error"][k] == pytest.approx(single["error"][k], rel=1e-12)
        # the combination's theory: two identical members are the one teacher (Q = G^+ G G^+ = G^+)
        assert double["predicted"]["error"][k] == pytest.approx(single["predicted"]["error"][k], rel=1e-7)
        assert double["variance"][k]["exact"] == pytest.approx(single["variance"][k]["exact"], rel=1e-7)
    assert [m["error"] for m in double["members"]] == pytest.approx([single["error"]["weak"]] * 2, rel=1e-12)
    assert double["teachers"]["pairs"][0]["d_ww"] == pytest.approx(double["teachers"]["members"][0]["d_w"], rel=1e-6)


def test_combined_teacher_through_fit_student_and_report(made) -> None:
    p = _combine(made, "mean", made["t1"], made["t2"], out="p-mean.safetensors")
    out = made["dir"] / "r-mean.safetensors"
    assert w2s("fit-student", p, "--strong", made["s"], "-o", out).exit_code == 0
    report = w2s("report", out)
    assert report.exit_code == 0
    assert "member 1" in report.stdout and "member 2" in report.stdout and "Combined teachers (mean)" in report.stdout
    assert "not analysed" not in report.stdout  # analysed: the theory block, not a note that it was not
    one = w2s("report", made["dir"] / "p-one.result.safetensors").stdout
    assert "not analysed" not in one
    # the combined teacher's d/rows and basis are its members' (the first member's are not shown as its own)
    assert "subspaces: weak K =" in " ".join(one.split()) and "weak K =" not in " ".join(report.stdout.split())
    d = json.loads(w2s("report", out, "--json").stdout)
    assert d["weak_model"] == "mean(w1@0+w2@0)"
    t = d["teachers"]
    assert [m["weight"] for m in t["members"]] == [0.5, 0.5]
    # averaging two teachers that share only part of their subspaces removes variance
    assert t["variance_exact"] < min(m["variance_exact"] for m in t["members"])
    assert t["pairs"][0]["d_ww"] < min(m["d_w"] for m in t["members"])
    rec = store.load(p).record
    assert rec.combination.rule == "mean" and len(rec.combination.members) == 2


def test_confident_rule_takes_each_row_from_one_member(made) -> None:
    p = _combine(made, "confident", made["t1"], made["t2"], out="p-conf.safetensors")
    art = store.load(p)
    rows = np.asarray(art["pseudo_rows"])
    outs = []
    for t in (made["t1"], made["t2"]):
        q = made["dir"] / f"single-{t.stem}.safetensors"
        assert w2s("pseudolabel", t, "-o", q).exit_code == 0
        assert np.array_equal(np.asarray(store.load(q)["pseudo_rows"]), rows)
        outs.append(np.asarray(store.load(q)["pseudo_labels"]))
    combined = np.asarray(art["pseudo_labels"])
    from_one = np.array([any(np.array_equal(combined[i], o[i]) for o in outs) for i in range(len(rows))])
    assert from_one.all()
    shares = [m.share for m in art.record.combination.members]
    assert sum(shares) == pytest.approx(1.0) and min(shares) > 0
    out = made["dir"] / "r-conf.safetensors"
    r = w2s("fit-student", p, "--strong", made["s"], "-o", out)
    assert r.exit_code == 0 and "per-sample rule" in r.stderr


def test_stack_weights_use_only_the_n_labels(made, tmp_path) -> None:
    p = _combine(made, "stack", made["t1"], made["t2"], out="p-stack.safetensors")
    w = store.load(p).record.combination.weights
    scrambled = _views(tmp_path / "scrambled", labels_seed=5)
    t1, t2 = _teachers(tmp_path, scrambled)
    q = tmp_path / "p-stack.safetensors"
    assert w2s("pseudolabel", t1, t2, "--combine", "stack", "-o", q).exit_code == 0
    assert store.load(q).record.combination.weights == w  # bit-identical
    assert sum(w) == pytest.approx(1.0) and min(w) >= 0


def test_simplex_least_squares_is_the_constrained_optimum() -> None:
    rng = np.random.default_rng(3)
    A, y = rng.normal(size=(200, 4)), rng.normal(size=200)
    w = simplex_least_squares(A, y)
    assert w.min() >= 0 and w.sum() == pytest.approx(1.0)
    loss = ((A @ w - y) ** 2).sum()
    for _ in range(2000):  # no point of the simplex does better
        v = rng.dirichlet(np.ones(4) * 0.3)
        assert ((A @ v - y) ** 2).sum() >= loss - 1e-9
    # a target one column reproduces exactly: all weight on it; identical columns: the weight split
    assert simplex_least_squares(A, A[:, 2]) == pytest.approx([0, 0, 1, 0], abs=1e-9)
    assert simplex_least_squares(np.stack([A[:, 0], A[:, 0]], 1), y).sum() == pytest.approx(1.0)


def test_ensemble_variance_and_w2s_leave_one_out_are_exact() -> None:
    """Brute force on a small design: the combined teacher and its W2S student as explicit linear maps of
    the n labels (fits on unit label vectors), and the student of teachers refitted without row i."""
    rng = np.random.default_rng(1)
    n, N, T, d1, d2, ds = 40, 120, 50, 5, 4, 6
    Z1, Z2, Zs = (rng.normal(size=(n + N + T, d)) for d in (d1, d2, ds))
    Zs[:, :2] += Z1[:, :2]  # some shared directions
    L, P, Te = slice(0, n), slice(n, n + N), slice(n + N, None)
    Y = rng.normal(size=(n, 1))
    w = np.array([0.3, 0.7])
    members = [fit_rows(Z1[L], Y), fit_rows(Z2[L], Y)]
    Zw = np.hstack([Z1, Z2])
    blocks = [slice(0, d1), slice(d1, d1 + d2)]
    ens = Ensemble(members, w, blocks, Moments.of(Zw[L]).cross)

    def teacher_map(Zrows: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return sum(wk * fit_rows(Zw[L][:, b], labels).predict(Zrows[:, b]) for wk, b in zip(w, blocks, strict=True))

    eye = np.eye(n)
    H = teacher_map(Zw[Te], eye)  # (T, n): the teacher's test outputs per unit label
    test_w = Moments.of(Zw[Te])
    assert variance_coefficient(ens, test_w) == pytest.approx((H**2).sum(axis=1).mean(), rel=1e-9)
    student = fit_rows(Zs[P], ens.predict(Zw[P]))
    Hs = fit_rows(Zs[P], teacher_map(Zw[P], eye)).predict(Zs[Te])
    P_m = Moments.of(np.hstack([Zw[P], Zs[P]]))
    d_w = d1 + d2
    w2s_map = W2SMap.build(ens, student, P_m.cross[:d_w, d_w:], P_m.mean[:d_w])
    assert w2s_map.variance_coefficient(Moments.of(Zs[Te])) == pytest.approx((Hs**2).sum(axis=1).mean(), rel=1e-9)
    loo = w2s_loo_residuals(w2s_map, Zw[L], Zs[L], Y)
    for i in (0, 7, 19):
        keep = np.delete(np.arange(n), i)
        refit = sum(
            wk * fit_rows(Zw[L][keep][:, b], Y[keep]).predict(Zw[P][:, b]) for wk, b in zip(w, blocks, strict=True)
        )
        brute = Y[i] - fit_rows(Zs[P], refit).predict(Zs[L][i : i + 1])[0]
        assert loo[i] == pytest.approx(brute, rel=1e-8, abs=1e-10)


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("no-rule", "name how to combine them"),
        ("bad-rule", "--combine must be one of"),
        ("other-seed", "drew another split"),
        ("other-samples", "other samples"),
        ("other-noise", "another label noise"),
        ("stack-logistic", "needs ridgeless teachers"),
        ("embeddings", "--embeddings names one teacher"),
        ("stdin", "not read from stdin"),
        ("mixed-link", "outputs of one kind"),
    ],
)
def test_combining_refuses_teachers_that_do_not_belong(made, tmp_path, case, pattern) -> None:
    t1, t2, views = made["t1"], made["t2"], made
    args: list = [t1, t2, "--combine", "mean"]
    if case == "no-rule":
        args = [t1, t2]
    elif case == "bad-rule":
        args = [t1, t2, "--combine", "median"]
    elif case in ("other-seed", "other-noise", "stack-logistic", "mixed-link"):
        extra = {
            "other-seed": ["--seed", "1"],
            "other-noise": ["--label-noise", "0.1"],
            "stack-logistic": ["--solver", "logistic"],
            "mixed-link": ["--solver", "logistic"],
        }[case]
        r = w2s("train-weak", views["w2"], *SPLIT, *extra, "-o", tmp_path / "t-other.safetensors")
        assert r.exit_code == 0, r.output
        rule = "stack" if case == "stack-logistic" else "mean"
        args = [t1, tmp_path / "t-other.safetensors", "--combine", rule]
        if case == "stack-logistic":
            args = [tmp_path / "t-other.safetensors", tmp_path / "t-other.safetensors", "--combine", "stack"]
    elif case == "other-samples":
        X = np.random.default_rng(0).normal(size=(M + 10, 16))
        emb = embeddings_artifact(tmp_path / "e.safetensors", X, np.arange(M + 10) % 4, "other")
        assert w2s("train-weak", emb, *SPLIT, "-o", tmp_path / "t-other.safetensors").exit_code == 0
        args = [t1, tmp_path / "t-other.safetensors", "--combine", "mean"]
    elif case == "embeddings":
        args += ["--embeddings", made["w1"]]
    elif case == "stdin":
        args = ["-", t2, "--combine", "mean"]
    before = {p: p.stat().st_mtime_ns for p in (t1, t2)}
    out = tmp_path / "p.safetensors"
    assert_user_error(w2s("pseudolabel", *args, "-o", out), pattern)
    assert not out.exists()
    assert {p: p.stat().st_mtime_ns for p in (t1, t2)} == before


def test_design_member_blocks() -> None:
    d = Design(3, 9, 2, *([None] * 9), w_blocks=(4, 5))
    assert [(s.start, s.stop) for s in d.members] == [(0, 4), (4, 9)]


@pytest.mark.slow  # a finetune from the session extraction
def test_combined_teacher_through_finetune_and_report(finetune_inputs, weak_emb, tmp_path) -> None:
    """Two teachers of the finetune inputs' split (the same weak embeddings, two bases) combined; `w2s
    finetune` trains on the combination, carries its predictions, and the report shows each member."""
    from conftest import copy_finetune_inputs

    d, pseudo, strong = copy_finetune_inputs(finetune_inputs, tmp_path)
    t2 = d / "t2.safetensors"
    r = w2s("train-weak", weak_emb, "--n-labeled", 100, "--n-pseudo", 300, "--n-test", 200, "--subspace", 12, "-o", t2)
    assert r.exit_code == 0, r.output
    t1 = finetune_inputs / "t.safetensors"
    combined = d / "pc.safetensors"
    assert w2s("pseudolabel", t1, t2, "--combine", "stack", "-o", combined).exit_code == 0
    out = d / "ft.safetensors"
    r = w2s("finetune", combined, "--strong", strong, "--train", "last:1", "--epochs", 1, "--subspace", 20,
            "--num-workers", 0, "-q", "-o", out)  # fmt: skip
    assert r.exit_code == 0, r.output
    j = json.loads(w2s("report", out, "--json").stdout)
    assert j["weak_model"].startswith("stack(") and [m["label"] for m in j["members"]] == [
        m.label for m in store.load(combined).record.combination.members
    ]
    assert set(j["predicted"]["error"]) == {"weak", "w2s", "strong_sft", "ceiling"}
    assert j["error"]["weak"] == pytest.approx(
        float(((np.asarray(store.load(combined)["weak_test_output"]) - np.eye(10)[_test_labels(out)]) ** 2).mean()),
        rel=1e-9,
    )
    assert "member 2" in w2s("report", out).stdout


def _test_labels(result: Path) -> np.ndarray:
    art = store.load(result)
    emb = store.load(store.resolve(art.record.provenance["strong_embeddings"], result))
    labels = np.asarray(emb["labels"])
    return labels[np.asarray(art["test_rows"])]


@pytest.mark.slow  # reuses the session's tiny-run extraction
def test_run_combines_several_weak_teachers(tiny_run, tmp_path) -> None:
    """`w2s run --weak A --weak A --combine mean`: the combination of two identical teachers scores as the
    one teacher's run; the trial keeps both teachers and the combined pseudo-labels."""
    from conftest import TINY_MODELS, TINY_SIZES, seed_run_dir

    folder = seed_run_dir(tiny_run, tmp_path / "run")
    weak = TINY_MODELS[1]
    args = ["run", "--weak", weak, "--weak", weak, "--combine", "mean", *TINY_MODELS[2:], *TINY_SIZES]
    r = w2s(*args, "--n-pseudo", 300, "--out-dir", folder, "--json")
    assert r.exit_code == 0, r.output
    j = json.loads(r.stdout)
    single = tiny_run.summary
    assert j["weak_model"] == f"mean({weak}+{weak})"
    for k in ("weak", "w2s", "strong_sft", "ceiling"):
        assert j["error"][k] == pytest.approx(single["error"][k], rel=1e-9)
    assert (folder / "trial-0" / "teacher-1.safetensors").exists()
    assert store.load(folder / "trial-0" / "pseudolabels.safetensors").record.combination.rule == "mean"


@pytest.mark.parametrize(
    "extra, pattern",
    [
        (["--weak", "test_efficientnet@32", "--weak", "test_resnet@24"], "name how to combine them"),
        (["--weak", "test_efficientnet@32", "--combine", "vote"], "--combine must be one of"),
        (["--weak", "test_efficientnet@32", "--weak", "test_efficientnet@32", "--combine", "stack"], "given twice"),
        (["--weak", "test_efficientnet@32", "--combine", "mean"], "needs at least two --weak teachers"),
    ],
)
def test_run_refuses_a_combination_it_cannot_make(tmp_path, extra, pattern) -> None:
    r = w2s("run", "--data", "digits", *extra, "--strong", "test_resnet@32", "--no-pretrained", "--out-dir", tmp_path)
    assert_user_error(r, pattern)
    assert not any(tmp_path.iterdir())


def test_stack_refuses_a_teacher_that_interpolates_its_labels(made, tmp_path) -> None:
    """A basis as wide as the n labelled rows leaves no leave-one-out output to weigh: refused, not guessed."""
    split = ["--n-labeled", "12", "--n-pseudo", "1200", "--n-test", "600"]
    ts = []
    for k, sub in (("w1", "16"), ("w2", "8")):
        t = tmp_path / f"t-{k}.safetensors"
        r = w2s("train-weak", made[k], *split, "--subspace", sub, "-o", t)
        assert r.exit_code == 0, r.output
        ts.append(t)
    out = tmp_path / "p.safetensors"
    assert_user_error(w2s("pseudolabel", *ts, "--combine", "stack", "-o", out), "interpolates its n labels")
    assert not out.exists()
    assert w2s("pseudolabel", *ts, "--combine", "mean", "-o", out).exit_code == 0  # the mean needs no weights


def test_stack_refuses_weights_the_labels_do_not_determine(made, tmp_path) -> None:
    """The same teacher twice: identical leave-one-out outputs fix only the sum of the two weights, so any split
    (1 and 0, or 0.5 each) would be a digit the n labels do not hold: refused (mean of the two is the teacher)."""
    out = tmp_path / "p.safetensors"
    r = w2s("pseudolabel", made["t1"], made["t1"], "--combine", "stack", "-o", out)
    assert_user_error(r, "weights are not determined")
    assert not out.exists()


def test_a_combination_of_one_teacher_is_refused(made, tmp_path) -> None:
    """--combine with one teacher would record a combination that combines nothing (weight 1): refused."""
    out = tmp_path / "p.safetensors"
    for rule in ("mean", "stack", "confident"):
        assert_user_error(w2s("pseudolabel", made["t1"], "--combine", rule, "-o", out), "needs at least two teachers")
    assert not out.exists()


def test_a_wrong_artifact_among_teachers_is_named_once(made, tmp_path) -> None:
    out = tmp_path / "p.safetensors"
    r = w2s("pseudolabel", made["t1"], made["w1"], "--combine", "mean", "-o", out)
    assert_user_error(r, f"teacher {made['w1']}: is a 'embeddings' artifact")
    assert not out.exists()


def test_members_over_trials_are_mean_and_standard_error() -> None:
    from w2s_cli.stages.summary import members_over_trials
    from w2s_cli.store.records import MemberError

    trials = [(MemberError("a", e, 0.001, acc, 0.01),) for e, acc in ((0.04, 0.8), (0.05, 0.7), (0.06, 0.9))]
    (m,) = members_over_trials(trials)
    assert m.error == pytest.approx(0.05) and m.error_stderr == pytest.approx(0.01 / np.sqrt(3))
    assert m.accuracy == pytest.approx(0.8) and m.accuracy_stderr == pytest.approx(0.1 / np.sqrt(3))
    assert members_over_trials([None, None]) is None


def test_rank_candidates_are_each_teacher_then_each_rules_combinations():
    """rank-teachers' candidates (studies/ranking.py): the teachers alone, then per rule every pair (--pairs)
    and all of them; two teachers' pair is all of them (not ranked twice); stack beyond MAX_STACK refused."""
    from w2s_cli import W2SError
    from w2s_cli.options import BackboneSpec, RunOptions
    from w2s_cli.stages.combine import MAX_STACK
    from w2s_cli.studies.ranking import candidate_label, candidates

    specs = [BackboneSpec.parse(f"test_resnet@{16 + 2 * k}", pretrained=False) for k in range(MAX_STACK + 1)]
    base = RunOptions(weak=specs[0], strong=BackboneSpec.parse("test_efficientnet@32", pretrained=False))
    names = [candidate_label(o) for o in candidates(base, specs[:3], ("mean", "stack"), pairs=True)]
    a, b, c = (s.label for s in specs[:3])
    pairs = [f"{a}+{b}", f"{a}+{c}", f"{b}+{c}", f"{a}+{b}+{c}"]
    assert names == [a, b, c, *(f"mean({g})" for g in pairs), *(f"stack({g})" for g in pairs)]
    two = candidates(base, specs[:2], ("mean",), pairs=True)
    assert [candidate_label(o) for o in two] == [a, b, f"mean({a}+{b})"]
    assert [o.combine for o in candidates(base, specs[:3], ("stack",))] == [None, None, None, "stack"]
    assert len(candidates(base, specs, ("mean",))) == MAX_STACK + 2
    with pytest.raises(W2SError, match=f"at most {MAX_STACK}"):
        candidates(base, specs, ("stack",))
