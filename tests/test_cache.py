"""The cache service (store/cache.py) and the fit cache: strong SFT and the ceiling depend neither on the teacher
nor (SFT) on N, so a finetune of another teacher's pseudo-labels on the same split reuses them; the reused fit's
test outputs and record are what it would have computed (checked against a fresh finetune, bit for bit), and
anything a fit depends on, changed, is a new fit."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import QUIET, TINY_MODELS, TINY_SIZES, w2s

from w2s_cli.options import SplitOptions, SubspaceOptions
from w2s_cli.options.recipe import FinetuneRecipe
from w2s_cli.stages.finetune import FITS, finetune
from w2s_cli.stages.teacher import pseudolabel, train_weak
from w2s_cli.store import artifact as store
from w2s_cli.store.cache import key, slug

RECIPE = FinetuneRecipe(train="head", epochs=2, batch_size=32)
SHARED = ("strong_sft", "ceiling")
TIMES = ("seconds", "weights", "weights_path", "reused_from")  # where a reused fit's record may differ


@pytest.fixture(scope="module")
def inputs(tiny_run, tmp_path_factory) -> dict[str, Path]:
    """The session's tiny embeddings (both test_efficientnet@32 and test_resnet@32 over the same digits) and
    the pseudo-labels of two teachers on one split: one on each backbone's embeddings."""
    d = tmp_path_factory.mktemp("cache-inputs")
    for role in ("weak", "strong"):
        shutil.copy(tiny_run.embeddings(role), d / f"{role}.safetensors")
    split = SplitOptions(n_labeled=100, n_pseudo=200, n_test=200)
    found = {"strong": d / "weak.safetensors", "other_strong": d / "strong.safetensors"}
    for name, emb in (("a", d / "strong.safetensors"), ("b", d / "weak.safetensors")):
        teacher = train_weak(emb, d / f"t{name}.safetensors", split=split, subspace=SubspaceOptions("20"))
        found[name] = pseudolabel(teacher, d / f"p{name}.safetensors")
    return found


def numbers(trials: list[dict]) -> list[dict]:
    """A result's trials without where their predictions' after-kernel is (its files, ids and seconds)."""
    return [{k: v for k, v in t.items() if k != "after_kernel"} for t in trials]


def tuned(pseudo: Path, strong: Path, out: Path, cache: Path | None, **kw) -> store.Artifact:
    return store.load(finetune(pseudo, strong, out=out, recipe=kw.pop("recipe", RECIPE), extract=QUIET,
                               fit_cache=cache, **kw))  # fmt: skip


def same_fit(a: store.Artifact, b: store.Artifact, fit: str) -> None:
    """Fit `fit` of a and b: the same test outputs (epoch 0 and final) and record, bit for bit."""
    for name in (f"test_output_{fit}", f"init_output_{fit}", f"start_coef_{fit}", f"start_intercept_{fit}"):
        assert np.array_equal(a[name], b[name]), name
    ra, rb = a.meta["fits"][fit], b.meta["fits"][fit]
    assert {k: v for k, v in ra.items() if k not in TIMES} == {k: v for k, v in rb.items() if k not in TIMES}


@pytest.mark.slow  # finetunes on the session's extractions
def test_strong_sft_and_ceiling_are_finetuned_once_across_teachers(inputs, tmp_path, capsys):
    """Teacher b's finetune reuses teacher a's strong SFT and ceiling (its record says from which result, its
    weights are a's files); its numbers are those of a fresh finetune of b without the cache, bit for bit."""
    cache = tmp_path / "fits"
    a = tuned(inputs["a"], inputs["strong"], tmp_path / "a" / "r.safetensors", cache)
    assert not any("reused_from" in a.meta["fits"][f] for f in FITS)
    capsys.readouterr()
    b = tuned(inputs["b"], inputs["strong"], tmp_path / "b" / "r.safetensors", cache)
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("reusing")]
    assert len(said) == 2 and "strong SFT fit" in said[0] and "ceiling fit" in said[1], said
    fresh = tuned(inputs["b"], inputs["strong"], tmp_path / "fresh" / "r.safetensors", None)
    for fit in FITS:
        same_fit(b, fresh, fit)
    for name in b.names():
        assert np.array_equal(b[name], fresh[name]), name
    assert b.meta["trials"] == fresh.meta["trials"]
    for fit in SHARED:
        record = b.meta["fits"][fit]
        assert record["reused_from"] == {"path": str(a.path.resolve()), "relpath": "../a/r.safetensors"}
        assert record["weights_path"] == a.meta["fits"][fit]["weights_path"]
        assert (b.path.parent / record["weights"]).resolve() == Path(record["weights_path"])
        assert not (tmp_path / "b" / "r.safetensors.fits" / fit).exists()  # nothing finetuned again
    assert "reused_from" not in b.meta["fits"]["w2s"]  # the teacher's own fit: never shared
    assert not np.array_equal(a["test_output_w2s"], b["test_output_w2s"])
    assert sorted(p.name.split(".")[1].split("-")[0] for p in cache.iterdir()) == sorted(SHARED)


@pytest.mark.slow  # finetunes on the session's extractions
def test_an_untrained_start_is_neither_cached_nor_served_from_the_cache(inputs, tmp_path):
    """A proxy's strong SFT and ceiling stay at their LP-FT starts (trained=("w2s",)): such a start is not a
    finetuned fit, so it never enters the fit cache, a later full finetune still finetunes them, and a start
    asked for after that is still a start, not the cached fit."""
    cache = tmp_path / "fits"
    start = tuned(inputs["a"], inputs["strong"], tmp_path / "start" / "r.safetensors", cache, trained=("w2s",))
    assert not cache.exists() or not any(cache.iterdir())
    assert all(start.meta["fits"][f]["finetuned"] is False for f in SHARED)
    full = tuned(inputs["a"], inputs["strong"], tmp_path / "full" / "r.safetensors", cache)
    assert not any("reused_from" in full.meta["fits"][f] for f in SHARED)
    assert all("finetuned" not in full.meta["fits"][f] for f in SHARED)
    again = tuned(inputs["a"], inputs["strong"], tmp_path / "again" / "r.safetensors", cache, trained=("w2s",))
    for fit in SHARED:
        assert again.meta["fits"][fit]["finetuned"] is False and "reused_from" not in again.meta["fits"][fit]
        assert np.array_equal(again[f"test_output_{fit}"], start[f"test_output_{fit}"])
        assert "weights" in full.meta["fits"][fit] and "weights" not in again.meta["fits"][fit]  # no fit's files


def with_seed(pseudo: Path, seed: int, out: Path) -> Path:
    """The same pseudo-labels (rows, labels) recorded as drawn with another seed: a fit's validation slice
    and batch order follow it."""
    art = store.load(pseudo)
    meta = copy.deepcopy(art.meta)
    meta["split"]["seed"] = seed
    return store.save(store.Artifact("pseudolabels", meta, {n: art[n] for n in art.names()}), out)


@pytest.mark.slow  # finetunes on the session's extractions
def test_a_fit_is_not_reused_when_anything_it_depends_on_changes(inputs, tmp_path):
    """The recipe, the fit's rows, the seed, the strong embeddings: each changed is a new fit; so is a fit whose
    weights are gone, and one asked for with reuse off."""
    cache = tmp_path / "fits"
    tuned(inputs["a"], inputs["strong"], tmp_path / "base" / "r.safetensors", cache)
    split = SplitOptions(n_labeled=120, n_pseudo=200, n_test=200)
    teacher = train_weak(inputs["strong"], tmp_path / "t.safetensors", split=split, subspace=SubspaceOptions("20"))
    other_rows = pseudolabel(teacher, tmp_path / "p-rows.safetensors")
    changed = {
        "recipe": (inputs["a"], inputs["strong"], {"recipe": FinetuneRecipe(train="head", epochs=2, batch_size=16)}),
        "rows": (other_rows, inputs["strong"], {}),
        "seed": (with_seed(inputs["a"], 5, tmp_path / "p-seed.safetensors"), inputs["strong"], {}),
        "strong": (inputs["a"], inputs["other_strong"], {}),
        "no reuse": (inputs["a"], inputs["strong"], {"reuse": False}),
    }
    for what, (pseudo, strong, kw) in changed.items():
        r = tuned(pseudo, strong, tmp_path / slug(what) / "r.safetensors", cache, **kw)
        assert not any("reused_from" in r.meta["fits"][f] for f in SHARED), what
        assert all((tmp_path / slug(what) / "r.safetensors.fits" / f / "final.safetensors").is_file() for f in SHARED)
    again = tuned(inputs["a"], inputs["strong"], tmp_path / "again" / "r.safetensors", cache)
    assert all("reused_from" in again.meta["fits"][f] for f in SHARED)  # nothing changed: reused
    # the fits the cache points to, gone: finetuned again (and the cache points to the new ones)
    shutil.rmtree(tmp_path / "no-reuse" / "r.safetensors.fits")
    gone = tuned(inputs["a"], inputs["strong"], tmp_path / "gone" / "r.safetensors", cache)
    assert not any("reused_from" in gone.meta["fits"][f] for f in SHARED)


@pytest.mark.slow  # finetunes on the session's extractions
def test_a_sweep_over_teachers_finetunes_strong_sft_and_the_ceiling_once(tiny_run, tmp_path):
    """`w2s sweep --vary weak-subspace=10,20 --student finetune` in a run's folder: the second point's trial
    reuses the first point's strong SFT and ceiling (kept in fits/ beside the strong embeddings), its result
    says so, and its numbers are those of a fresh `w2s run` of that teacher alone."""
    args = [*TINY_MODELS, *TINY_SIZES, "--n-pseudo", 300, "--student", "finetune", "--train", "head", "--epochs", 1]
    out, fresh = tmp_path / "sweep", tmp_path / "fresh"
    for folder in (out, fresh):
        folder.mkdir()
        for role in ("weak", "strong"):
            shutil.copy(tiny_run.embeddings(role), folder)
    r = w2s("sweep", *args, "--vary", "weak-subspace=10,20", "--out-dir", out)
    assert r.exit_code == 0, r.output
    assert sum(line.startswith("reusing") and " fit of the same " in line for line in r.stderr.splitlines()) == 2
    assert len(list((out / "fits").glob("*.safetensors"))) == 2
    first, second = (next((out / "points" / f"weak-subspace={k}").glob("trial-0/result-finetune-*.safetensors"))
                     for k in (10, 20))  # fmt: skip
    made = store.load(second)
    for fit in SHARED:
        assert made.meta["fits"][fit]["reused_from"]["path"] == str(first.resolve())
    assert w2s("run", *args, "--weak-subspace", 20, "--out-dir", fresh).exit_code == 0
    alone = store.load(next(fresh.glob("trial-0/result-finetune-*.safetensors")))
    for fit in FITS:
        same_fit(made, alone, fit)
    assert numbers(made.meta["trials"]) == numbers(alone.meta["trials"])
    # the combined point records the reuse relative to itself
    point = store.read_meta(next((out / "points" / "weak-subspace=20").glob("result-finetune-*.safetensors")))
    ref = point["fits"]["strong_sft"]["reused_from"]
    assert (second.parent.parent / ref["relpath"]).resolve() == Path(ref["path"]) == first.resolve()


def test_identities_hash_canonically_and_names_are_slugged_as_before():
    assert key({"a": 1, "b": [1, 2]}) == key({"b": [1, 2], "a": 1}) != key({"a": 1, "b": [2, 1]})
    assert slug("hf-hub:timm/vit_small@32") == "hf-hub-timm_vit_small@32"  # the embeddings' and teachers' names
    assert slug("weak=test_efficientnet@32_label-noise=0.1") == "weak=test_efficientnet@32_label-noise=0.1"
    assert slug("points/a b/trial-0") == "points_a-b_trial-0"
