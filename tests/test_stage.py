"""A backbone cut at an earlier stage (`extract --stage K`, `MODEL:stageK@PX`): its embedding is the global
average pool of timm's stage-K feature map, its artifact says so (and never passes for the whole model's),
its caches are its own, and a run, sweep or ranking takes it as an ordinary weak teacher."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from conftest import QUIET, assert_user_error, w2s

from w2s_cli import W2SError
from w2s_cli.extraction.extract import extract
from w2s_cli.inputs.backbones import create_backbone
from w2s_cli.inputs.preprocess import make_transform
from w2s_cli.inputs.sources import open_source
from w2s_cli.options import BackboneSpec, DataOptions
from w2s_cli.store.embeddings import EmbeddingSet, find

DIGITS = DataOptions("digits")
TINY = ["--strong", "test_resnet@32", "--no-pretrained", "--data", "digits", "--limit", 300]
SIZES = ["--n-labeled", 100, "--n-pseudo", 100, "--n-test", 100, "--subspace", 10, "--num-workers", 0, "-q"]


def by_hand(spec: BackboneSpec, ids: np.ndarray) -> np.ndarray:
    """Stage `spec.stage`'s feature map of the digits `ids`, from timm's own features_only model holding the
    weights the extraction used (the project's loading path), averaged over its height and width."""
    whole = create_backbone(BackboneSpec(spec.model, spec.image_size, spec.weights, spec.pretrained))
    features = timm.create_model(spec.model, features_only=True, out_indices=(spec.stage,)).eval()
    missing, _ = features.load_state_dict(whole.model.state_dict(), strict=False)
    assert missing == []  # every weight of the features_only model came from the extraction's network
    source, transform = open_source(DIGITS), make_transform(whole.data_config)
    x = torch.stack([transform(source.load(int(i))) for i in ids])
    with torch.inference_mode():
        (fmap,) = features(x)
    return fmap.mean(dim=(2, 3)).double().numpy()


@pytest.mark.parametrize(
    ("model", "stage", "pretrained"),
    [
        ("test_efficientnet", 2, False),
        ("test_resnet", 3, False),
        pytest.param("tf_efficientnet_lite0", 3, True, marks=pytest.mark.slow),  # the bundled offline weights
    ],
)
def test_stage_embedding_is_the_pooled_stage_feature_map(tmp_path, model, stage, pretrained):
    spec = BackboneSpec(model, 32, pretrained=pretrained, stage=stage)
    emb = EmbeddingSet(extract(DIGITS, spec, tmp_path / "e.safetensors", QUIET, limit=24))
    expected = by_hand(spec, emb.art["sample_ids"])
    assert emb.width == expected.shape[1] == timm.create_model(model).feature_info[stage]["num_chs"]
    # float32 convolutions in another memory layout (extraction runs channels_last): equal to float32 rounding
    scale = np.abs(expected).max()
    np.testing.assert_allclose(emb.rows(np.arange(emb.n_rows)), expected, rtol=0, atol=1e-5 * scale)


def test_the_record_names_the_stage_and_never_passes_for_the_whole_model(tmp_path):
    whole, cut = (
        BackboneSpec("test_efficientnet", 32, pretrained=False),
        BackboneSpec.parse("test_efficientnet:stage3@32"),
    )
    cut = BackboneSpec(cut.model, cut.image_size, pretrained=False, stage=cut.stage)
    a = EmbeddingSet(extract(DIGITS, whole, tmp_path / "whole.safetensors", QUIET, limit=24))
    b = EmbeddingSet(extract(DIGITS, cut, tmp_path / "cut.safetensors", QUIET, limit=24))
    assert b.record.stage == 3 and b.record.model["stage"] == 3 and b.record.model["width"] == 48 == b.width
    assert a.record.stage is None and "stage" not in a.record.model and "stage" not in a.signature()
    assert b.signature() == {**a.signature(), "stage": 3}  # the same weights, samples and size: only the cut
    assert "forward_intermediates" in b.record.provenance["pooling"]
    # the work a killed extraction resumes (its shards' manifest) is another one for another stage
    assert a.record.provenance["extraction"]["work"] != b.record.provenance["extraction"]["work"]
    with pytest.raises(W2SError, match="not the embeddings"):  # a result made from the whole model's rows
        find(a.reference(tmp_path / "result.safetensors"), tmp_path / "result.safetensors", b.path, "weak")


def test_the_embedding_cache_never_takes_a_cut_model_for_the_whole_one(tmp_path):
    from w2s_cli.studies.run import EmbeddingCache

    cache = EmbeddingCache(tmp_path, DIGITS, QUIET, 24, 0, reuse=True)
    whole = BackboneSpec("test_resnet", 32, pretrained=False)
    cut = BackboneSpec("test_resnet", 32, pretrained=False, stage=2)
    made = cache.get(cut)
    assert made.name == "test_resnet-32px-stage2.safetensors" and cache.reusable(cut) == made
    shutil.copy(made, cache.path(whole))  # even under the whole model's name, its request says what it is
    assert cache.reusable(whole) is None


def test_spec_syntax():
    assert BackboneSpec.parse("tf_efficientnet_lite2:stage3@64") == BackboneSpec("tf_efficientnet_lite2", 64, stage=3)
    assert BackboneSpec.parse("tf_efficientnet_lite2@64:stage3").label == "tf_efficientnet_lite2:stage3@64"
    assert BackboneSpec.parse("hf-hub:timm/x:stage1").stage == 1
    assert BackboneSpec.parse("test_resnet@32").label == "test_resnet@32"  # a whole model as before
    for bad in ("test_resnet:stagex@32", "test_resnet@32:stage-1"):
        with pytest.raises(W2SError, match="whole number"):
            BackboneSpec.parse(bad)


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (("--stage", 5), "stage 5: test_resnet has stages 0 to 4"),
        (("--stage", -1), "a stage is 0 or more"),
        (("--stage", 1, "--features", "grad", "--train", "head"), "--stage goes with plain embeddings"),
        (("--stage", 1, "--init", "result.safetensors"), "--stage goes with plain embeddings"),
    ],
)
def test_extract_refuses_a_stage_it_cannot_cut(tmp_path, args, pattern):
    out = tmp_path / "e.safetensors"
    r = w2s("extract", "--data", "digits", "--model", "test_resnet", "--no-pretrained", "-o", out, *args)
    assert_user_error(r, pattern)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("weak", "extra", "pattern"),
    [
        ("test_efficientnet:stage7@32", (), "stage 7: test_efficientnet has stages 0 to 4"),
        ("test_efficientnet:stagex@32", (), "the stage after :stage must be a whole number"),
        ("test_efficientnet@32", ("--strong", "test_resnet:stage2@32", "--student", "finetune"), "whole network"),
    ],
)
def test_run_refuses_a_bad_cut_before_any_work(tmp_path, weak, extra, pattern):
    out = tmp_path / "run"
    assert_user_error(w2s("run", "--weak", weak, *TINY, *SIZES, *extra, "--out-dir", out), pattern)
    assert not out.exists()


def test_finetuning_refuses_embeddings_of_a_cut_network(tmp_path):
    from w2s_cli.finetuning.network import spec_from_record

    emb = EmbeddingSet(
        extract(
            DIGITS,
            BackboneSpec("test_resnet", 32, pretrained=False, stage=2),
            tmp_path / "s.safetensors",
            QUIET,
            limit=24,
        )
    )
    with pytest.raises(W2SError, match="cut after stage 2; finetuning needs a whole network"):
        spec_from_record(emb.meta)


@pytest.mark.slow
def test_runs_and_a_sweep_take_cut_teachers_each_with_its_own_embeddings(tmp_path):
    out = tmp_path / "run"
    made = {}
    for weak in ("test_efficientnet:stage2@32", "test_efficientnet@32:stage3"):
        r = w2s("run", "--weak", weak, *TINY, *SIZES, "--out-dir", out, "--json")
        assert r.exit_code == 0, r.output
        made[weak] = json.loads(r.stdout)["weak_model"]
    assert made == {
        "test_efficientnet:stage2@32": "test_efficientnet:stage2",
        "test_efficientnet@32:stage3": "test_efficientnet:stage3",
    }
    weak_files = sorted(p.name for p in out.glob("weak-*.safetensors"))
    assert weak_files == [
        "weak-test_efficientnet-32px-stage2.safetensors",
        "weak-test_efficientnet-32px-stage3.safetensors",
    ]
    stages = {p.name: EmbeddingSet(p).record.stage for p in out.glob("weak-*.safetensors")}
    assert sorted(stages.values()) == [2, 3]
    assert "reusing" in r.stderr and "strong-test_resnet-32px" in r.stderr  # the strong one is shared

    vary = "weak=test_efficientnet:stage2@32,test_efficientnet:stage3@32,test_efficientnet@32"
    r = w2s("sweep", *TINY, *SIZES, "--vary", vary, "--out-dir", out, "--json")
    assert r.exit_code == 0, r.output
    for f in weak_files:  # the runs' cut embeddings, found again; only the whole model is extracted
        assert f"reusing {out / f}" in r.stderr
    assert (out / "embeddings" / "test_efficientnet-32px.safetensors").exists()
    assert len(list(Path(out, "embeddings").glob("test_efficientnet*"))) == 1

    teachers = ["--weak", "test_efficientnet:stage3@32", "--weak", "test_efficientnet@32:stage2"]
    r = w2s("rank-teachers", *TINY, *SIZES, *teachers, "--out-dir", out, "--json")
    assert r.exit_code == 0, r.output
    ranked = {e["weak"] for e in json.loads(r.stdout)["teachers"]}
    assert ranked == {"test_efficientnet:stage3@32", "test_efficientnet:stage2@32"}
    assert "to embed" not in r.stderr and r.stderr.count("reusing") == 3  # both cut teachers and the strong
