"""`w2s rank-teachers --student finetune` (issue 26): weak teachers ranked by the predicted finetuned W2S error
from one short W2S finetune per teacher, its cost beside the full finetunes', on digits with tiny random-weight
timm models (strong test_efficientnet@32, cut for --train last:1; three teachers)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_SIZES, relabel, seed_run_dir, w2s
from safetensors.numpy import load_file

from w2s_cli.options import BackboneSpec, DataOptions, RunOptions, SplitOptions, StudentKind, SubspaceOptions
from w2s_cli.options.recipe import FinetuneRecipe
from w2s_cli.store import artifact as store
from w2s_cli.store.records import Proxy, Ranking, RankingCost, RecordError

STRONG = "test_efficientnet@32"
TEACHERS = ("test_resnet@32", "test_resnet@24", "test_efficientnet@24")
N_PSEUDO = 300
RECIPE = ("--train", "last:1", "--epochs", 2, "--ft-batch-size", 32, "--lr", 3e-3)
RANK = ("rank-teachers", "--strong", STRONG, *[a for t in TEACHERS for a in ("--weak", t)], "--no-pretrained",
        *TINY_SIZES, "--n-pseudo", N_PSEUDO)  # fmt: skip
FINETUNED = (*RANK, "--student", "finetune", *RECIPE)


@pytest.fixture(scope="module")
def ranked(tmp_path_factory, tiny_run) -> tuple[Path, dict, dict]:
    """The finetuned ranking of the three teachers with --measure, and the linear one (--measure) in the same
    folder: (out-dir, finetuned JSON, linear JSON). The tiny run's test_efficientnet@32 and test_resnet@32
    embeddings are reused; the @24 teachers are extracted."""
    out = seed_run_dir(tiny_run, tmp_path_factory.mktemp("rank-finetune") / "out")
    r = w2s(*FINETUNED, "--measure", "--out-dir", out, "--json")
    assert r.exit_code == 0, r.output
    probe = w2s(*RANK, "--measure", "--out-dir", out, "--json")
    assert probe.exit_code == 0, probe.output
    return out, json.loads(r.stdout), json.loads(probe.stdout)


@pytest.mark.slow
def test_ranks_by_predicted_finetuned_w2s_error_in_the_linear_rankings_shape_with_its_cost(ranked):
    """Three teachers ranked end to end, lowest predicted finetuned W2S error first; the JSON is the linear
    ranking's plus `proxy` and `cost` (and each teacher's proxy seconds); the ratios are computed from the cost
    fields; --measure finetunes every teacher's student and gives Spearman's correlation."""
    _, ft, probe = ranked
    assert set(ft) == set(probe) | {"proxy", "cost"}
    for t, p in zip(ft["teachers"], probe["teachers"], strict=True):
        assert set(t) == set(p) | {"proxy_seconds"} and set(t["predicted"]) == set(p["predicted"])
        assert t["proxy_seconds"] > 0 and set(t["measured"]) == set(p["measured"])
    assert {t["weak"] for t in ft["teachers"]} == set(TEACHERS)
    errors = [t["predicted"]["error_w2s"] for t in ft["teachers"]]
    assert errors == sorted(errors) and all(t["predicted"]["error_w2s_stderr"] > 0 for t in ft["teachers"])
    assert ft["proxy"]["epochs"] == 1 and ft["proxy"]["recipe"]["train"] == "last:1" and "PGR" in ft["proxy"]["note"]
    c = ft["cost"]
    assert c["seconds"] == pytest.approx(sum(t["proxy_seconds"] for t in ft["teachers"]), abs=2e-3)
    assert c["reused"] == 0 and c["wall_seconds"] > 0
    assert c["full_estimated_seconds"] > 0 and c["ratio"] == c["seconds"] / c["full_estimated_seconds"]
    assert c["full_measured_seconds"] > 0 and c["measured_ratio"] == c["seconds"] / c["full_measured_seconds"]
    assert isinstance(ft["spearman"], float) and -1 <= ft["spearman"] <= 1 and ft["max_relative_error"] > 0
    # the measured errors are the finetuned students' (the linear ranking measured its own on the same split)
    measured = {t["weak"]: t["measured"]["error_w2s"] for t in ft["teachers"]}
    assert measured != {t["weak"]: t["measured"]["error_w2s"] for t in probe["teachers"]}
    record = Ranking.from_json(ft)
    assert record.to_json() == ft and record.cost.ratio == c["ratio"]


@pytest.mark.slow
def test_a_rerun_reuses_the_proxies_and_says_what_they_cost(ranked):
    """Without --measure, in the same folder: every proxy reused (its files untouched), the same predictions,
    the cost of the proxies as measured when they were made; the table says what it ranks by and its cost."""
    out, ft, _ = ranked
    proxies = sorted((out / "teachers").glob("*/proxy-*/trial-0/proxy.safetensors"))
    assert len(proxies) == 3
    stamps = [p.stat().st_mtime_ns for p in proxies]
    r = w2s(*FINETUNED, "--out-dir", out, "--json")
    assert r.exit_code == 0, r.output
    again = json.loads(r.stdout)
    assert r.stderr.count("(the proxy of the same teacher, draw") == 3
    assert [p.stat().st_mtime_ns for p in proxies] == stamps
    assert again["cost"]["reused"] == 3 and again["cost"]["seconds"] == ft["cost"]["seconds"]
    assert again["cost"]["full_measured_seconds"] is None and "spearman" not in again
    strip = {"measured"}
    assert [{k: v for k, v in t.items() if k not in strip} for t in again["teachers"]] == [
        {k: v for k, v in t.items() if k not in strip} for t in ft["teachers"]
    ]
    assert again["near_ties"] == ft["near_ties"]
    table = w2s(*FINETUNED, "--out-dir", out)
    assert table.exit_code == 0, table.output
    text = " ".join(table.stdout.split())
    assert "ranked by predicted finetuned W2S student error" in text and "biased high" in text
    assert "the proxies took" in text and "estimated here for finetuning a student per teacher in full" in text


@pytest.mark.slow
def test_the_predictions_read_no_label_of_the_pool_or_the_test_rows(ranked, tmp_path):
    """A teacher's proxy (made by the ranking): its predictions, dimensions and rows' errors (`in_kernel`, the
    linear ranking's computation in the after-kernel), again from copies of the weak embeddings, the
    after-kernel features and the pseudo-labels in which the true labels of the N pool rows and of the test
    rows are scrambled: bit-identical. (The W2S finetune itself reads no such label: test_finetune.py.)"""
    from w2s_cli.diagnostics.predict import predict_from_kernel
    from w2s_cli.studies.rank_finetune import in_kernel

    out, ft, _ = ranked
    teacher = next(t for t in ft["teachers"] if t["weak"] == "test_resnet@24")
    proxy = next((out / "teachers" / "test_resnet@24").glob("proxy-*/trial-0/proxy.safetensors"))
    made = store.read_meta(proxy)["trials"][0]
    features = store.resolve(made["after_kernel"]["features"], proxy)
    pseudo, weak = proxy.with_name("pseudolabels.safetensors"), out / "embeddings" / "test_resnet-24px.safetensors"
    p = store.load(pseudo)
    hidden = np.concatenate([np.asarray(p["pseudo_rows"]), np.asarray(p["test_rows"])])

    def scramble(name, array):
        if name not in ("labels", "pseudo_observed"):
            return None
        where = hidden if name == "labels" else np.arange(len(array))
        changed = array.copy()
        changed[where] = (changed[where] + 1 + np.arange(len(where)) % 7) % 10
        return changed

    copies = {name: tmp_path / f"{name}.safetensors" for name in ("w", "k", "p")}
    for name, src in (("w", weak), ("k", features), ("p", pseudo)):
        relabel(src, copies[name], scramble)
    assert not np.array_equal(store.load(copies["w"])["labels"], store.load(weak)["labels"])
    meta = store.read_meta(copies["p"])  # the scrambled pseudo-labels point to the scrambled weak embeddings
    meta["embeddings"] = {**meta["embeddings"], **store.reference(store.load(copies["w"]), copies["p"])}
    art = store.load(copies["p"])
    store.save(store.Artifact("pseudolabels", meta, {k: np.asarray(art[k]) for k in art.names()}), copies["p"])

    options = RunOptions(
        weak=BackboneSpec.parse("test_resnet@24", pretrained=False),
        strong=BackboneSpec.parse(STRONG, pretrained=False),
        split=SplitOptions(n_labeled=200, n_pseudo=N_PSEUDO, n_test=300),
        weak_subspace=SubspaceOptions("20"),
    )
    draw = in_kernel(copies["w"], copies["k"], options, 0)
    again = draw.predicted.to_json()
    assert again["error"] == made["predicted"]["error"] and again["pgr"] == made["predicted"]["pgr"]
    assert again["error"]["w2s"] == teacher["predicted"]["error_w2s"]  # one draw: the ranking's number
    assert (draw.d_w, draw.d_s, draw.d_sw) == (teacher["d_w"], teacher["d_s"], teacher["d_sw"])
    # fit-student's analysis in the same after-kernel (as `w2s proxy` predicts) agrees to rounding
    kernel = predict_from_kernel(copies["p"], copies["k"], tmp_path / "kernel.safetensors").to_json()
    for k, v in kernel["error"].items():
        assert v == pytest.approx(again["error"][k], rel=1e-6)
    kept = load_file(str(proxy.with_name("proxy.entry.safetensors")))["w2s_rows"]  # what near-ties are judged by
    assert np.array_equal(draw.w2s_rows, kept)


@pytest.mark.slow
def test_trials_average_over_draws_and_reuse_the_first_draws_proxies(ranked):
    """--trials 2 from the library: the seed-0 proxies reused, the seed-1 ones made; the predicted W2S error is
    the mean over the two draws and its standard error is over draws."""
    from w2s_cli.options import ExtractOptions
    from w2s_cli.studies.rank_finetune import rank_teachers_finetuned

    out, ft, _ = ranked
    teachers = [BackboneSpec.parse(t, pretrained=False) for t in TEACHERS[:2]]
    base = RunOptions(
        weak=teachers[0],
        strong=BackboneSpec.parse(STRONG, pretrained=False),
        split=SplitOptions(n_labeled=200, n_pseudo=N_PSEUDO, n_test=300),
        weak_subspace=SubspaceOptions("20"),
        strong_subspace=SubspaceOptions("20"),
        trials=2,
        student=StudentKind.finetune,
        finetune=FinetuneRecipe(train="last:1", epochs=2, batch_size=32, lr=3e-3),
    )
    r = rank_teachers_finetuned(out, DataOptions("digits"), base, ExtractOptions(num_workers=0, quiet=True), teachers)
    assert r.trials == 2 and r.cost.reused == 2 and len(r.teachers) == 2
    one = {t["weak"]: t["predicted"]["error_w2s"] for t in ft["teachers"]}
    for t in r.teachers:
        second = 2 * t.predicted.error_w2s - one[t.weak]  # the mean of draws 0 and 1, draw 0 as ranked before
        assert second > 0 and t.predicted.error_w2s_stderr == pytest.approx(abs(second - one[t.weak]) / 2)


@pytest.mark.slow
def test_a_combined_candidate_is_ranked_by_its_own_proxy(ranked):
    """--combine mean in the ranked folder: the teachers' proxies reused, the three combined (their pseudo-labels
    the mean of theirs) ranked among them by a proxy of their own; its d_w their coordinates side by side; the
    cost counts four candidates."""
    from w2s_cli.store.cache import slug
    from w2s_cli.store.records import PseudoLabelsRecord, read_record

    out, ft, _ = ranked
    r = w2s(*FINETUNED, "--combine", "mean", "--out-dir", out, "--json")
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    label = f"mean({'+'.join(TEACHERS)})"
    assert sorted(t["weak"] for t in got["teachers"]) == sorted([*TEACHERS, label])
    assert got["cost"]["reused"] == 3 and got["cost"]["seconds"] > ft["cost"]["seconds"]
    errors = [t["predicted"]["error_w2s"] for t in got["teachers"]]
    assert errors == sorted(errors)
    combined = next(t for t in got["teachers"] if t["weak"] == label)
    assert combined["d_w"] == sum(t["d_w"] for t in ft["teachers"]) and combined["proxy_seconds"] > 0
    proxy = next((out / "teachers" / slug(label)).glob("proxy-*/trial-0/proxy.safetensors"))
    assert store.read_meta(proxy)["trials"][0]["predicted"]["error"]["w2s"] == combined["predicted"]["error_w2s"]
    made = read_record(store.load(proxy.with_name("pseudolabels.safetensors")), PseudoLabelsRecord)
    assert made.combination.label == label and made.combination.weights == (1 / 3, 1 / 3, 1 / 3)

    def plain(t):
        return {k: v for k, v in t.items() if k != "measured"}

    before = {t["weak"]: plain(t) for t in ft["teachers"]}
    assert all(plain(t) == before[t["weak"]] for t in got["teachers"] if t["weak"] != label)


@pytest.mark.slow
def test_measure_spreads_the_finetunes_over_local_workers(ranked, tiny_run, tmp_path):
    """--measure --executor local:2 with a combined candidate, in a new folder: every candidate's finetuned
    pipeline run by the workers, the singles' measured errors those the in-process ranking measured."""
    out = seed_run_dir(tiny_run, tmp_path / "out")
    two = (*RANK[:3], "--weak", TEACHERS[0], "--weak", TEACHERS[2], *RANK[9:])
    r = w2s(*two, "--student", "finetune", *RECIPE, "--combine", "mean", "--measure", "--executor", "local:2",
            "--out-dir", out, "--json")  # fmt: skip
    assert r.exit_code == 0, r.output
    got = {t["weak"]: t for t in json.loads(r.stdout)["teachers"]}
    _, ft, _ = ranked
    assert set(got) == {TEACHERS[0], TEACHERS[2], f"mean({TEACHERS[0]}+{TEACHERS[2]})"}
    for t in ft["teachers"]:
        if t["weak"] in got:
            assert got[t["weak"]]["measured"]["error_w2s"] == pytest.approx(t["measured"]["error_w2s"], rel=1e-6)
    assert all(t["measured"]["error_w2s"] > 0 for t in got.values())


@pytest.mark.slow
def test_dry_run_estimates_the_proxies_beside_the_full_finetunes_and_writes_nothing(tmp_path):
    """--dry-run (calibrations on the tiny models): the proxies' seconds and the frozen prefix's cache to build,
    beside the estimate of finetuning every teacher's student in full; --measure adds the full pipelines."""
    out = tmp_path / "out"
    r = w2s(*FINETUNED, "--out-dir", out, "--dry-run", "--json")
    assert r.exit_code == 0, r.output
    work = json.loads(r.stdout)
    assert work["predictions"] == 3 and work["trials"] == 0 and work["finetune_epochs"] == 0
    assert work["seconds"]["proxies"] > 0 and work["full_finetune_seconds"] > 0 and work["prefix_images"] == 1797
    assert work["total_seconds"] == pytest.approx(sum(work["seconds"].values()))
    measured = json.loads(w2s(*FINETUNED, "--out-dir", out, "--measure", "--dry-run", "--json").stdout)
    assert measured["trials"] == 3 and measured["finetune_epochs"] == 3 * 2 * 3 and measured["seconds"]["proxies"] > 0
    text = w2s(*FINETUNED, "--out-dir", out, "--dry-run").stdout
    assert "proxies:" in text and "finetuning a student per teacher in full instead" in text
    combined = json.loads(w2s(*FINETUNED, "--combine", "mean", "--out-dir", out, "--dry-run", "--json").stdout)
    assert combined["predictions"] == 4  # one more proxy, on this process's one timing of the cut network
    assert combined["seconds"]["proxies"] == pytest.approx(work["seconds"]["proxies"] * 4 / 3)
    assert not out.exists()


def test_a_finetuned_ranking_keeps_its_layout_and_refuses_half_of_it():
    teacher = {"weak": "a@32", "d_w": 20.0, "d_s": 12.0, "d_sw": 4.7, "proxy_seconds": 8.2}
    teacher["predicted"] = {"error_w2s": 0.068, "error_w2s_stderr": 0.002, "error_weak": 0.058, "pgr": 0.6, "opr": 0.9}
    layout = {
        "strong": "b@32",
        "n_labeled": 200,
        "n_pseudo": 300,
        "trials": 1,
        "teachers": [teacher, {**teacher, "weak": "c@32"}],
        "near_ties": [],
        "proxy": {"recipe": FinetuneRecipe().record(), "epochs": 1, "kernel": "embeddings", "note": "why"},
        "cost": {"seconds": 30.0, "wall_seconds": 31.0, "reused": 0, "full_estimated_seconds": 120.0, "ratio": 0.25,
                 "full_measured_seconds": None, "measured_ratio": None},
    }  # fmt: skip
    record = Ranking.from_json(layout)
    assert record.to_json() == layout and list(record.to_json()) == list(layout)
    assert RankingCost.of(30.0, 31.0, 0, 120.0, 60.0).measured_ratio == 0.5 and RankingCost.of(1, 1, 0, 0).ratio is None
    with pytest.raises(RecordError, match="'proxy' and 'cost' go together"):
        Ranking.from_json({k: v for k, v in layout.items() if k != "cost"})
    with pytest.raises(RecordError, match="'proxy.epochs' is 0"):
        Proxy.from_json({**layout["proxy"], "epochs": 0})
