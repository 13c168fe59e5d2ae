"""Gradient features (`w2s extract --features grad`): against exact per-sample gradients from torch.func on a
tiny real timm model, restricted to exactly the finetuned parameters, first-order agreement with a real SGD
step, and the downstream stages on them (intrinsic-dim, train-weak | pseudolabel | fit-student)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import timm
import torch
from conftest import QUIET, assert_user_error, digits, save_random, w2s
from torch.func import functional_call, grad, vmap

from w2s_cli.diagnostics.grad_features import extract_gradients
from w2s_cli.finetuning.gradients import (
    GradientFeatures,
    default_head,
    distortion,
    gradient_student,
    output_signs,
)
from w2s_cli.options import BackboneSpec, DataOptions, SplitOptions, SubspaceOptions
from w2s_cli.options.recipe import TrainSpec
from w2s_cli.stages.student import fit_student
from w2s_cli.stages.teacher import pseudolabel, train_weak
from w2s_cli.store import artifact as store

MODEL, C = "test_efficientnet", 10


def student_for(train: str, dtype=torch.float32):
    torch.manual_seed(3)
    model = timm.create_model(MODEL).eval().to(dtype)
    student, names = gradient_student(model, MODEL, TrainSpec.parse(train), default_head(model.num_features, C, 0), 0)
    return student.to(dtype), names


def images(n: int, dtype=torch.float32) -> torch.Tensor:
    d = torch.tensor(digits().images[:n], dtype=dtype) / 16  # a copy: the shared digits are read-only
    x = torch.nn.functional.interpolate(d[:, None], size=32, mode="bilinear").expand(-1, 3, -1, -1)
    return (x - 0.5) / 0.25


def reference(student, names, xi, x) -> torch.Tensor:
    """Exact per-sample gradients of s(x) = xi . f(x) / sqrt C w.r.t. the trained parameters (torch.func)."""
    with torch.no_grad():
        a = student.cut.prefix(x)
    params = {n: p.detach() for n, p in student.named_parameters() if p.requires_grad}

    def s(p, one):
        return (functional_call(student, p, (one.unsqueeze(0),)) @ xi.to(one.dtype) / math.sqrt(C)).squeeze(0)

    g = vmap(grad(s), in_dims=(None, 0))(params, a)
    return torch.cat([g[n].flatten(1) for n in names], dim=1)


@pytest.mark.parametrize("train", ["head", "last:1", "lora:2"])
def test_exact_features_are_the_gradients_of_exactly_the_trained_parameters(train):
    student, names = student_for(train)
    xi = output_signs(C, 0)
    fn = GradientFeatures(student, names, xi, None, 0)
    trained = sorted(n for n, p in student.named_parameters() if p.requires_grad)
    assert [b.name for b in fn.blocks] == names == trained  # what enters is set_trainable's list, in its order
    if train == "head":
        assert names == ["head.bias", "head.weight"]
    elif train == "lora:2":
        assert all(".lora_" in n or n.startswith("head.") for n in names)
    else:
        assert all(n.startswith(("backbone.blocks.4.", "backbone.conv_head.", "backbone.bn2.", "head.")) for n in names)
    x = images(6)
    E, R = fn(x), reference(student, names, xi, x)
    assert E.shape == R.shape == (6, sum(p.numel() for p in student.parameters() if p.requires_grad))
    assert torch.allclose(E, R, rtol=1e-4, atol=1e-6 * R.abs().max())
    if train != "head":  # the backbone part is not zero (the start head is not a zero head)
        backbone = torch.cat(
            [e for b, e in zip(fn.blocks, fn.gradients(x), strict=True) if b.name.startswith("backbone")], 1
        )
        assert backbone.abs().max() > 1e-6


@pytest.mark.parametrize("train", ["head", "last:1"])
def test_projection_keeps_inner_products(train):
    """E[<Pg, Pg'>] = <g, g'>: at k = 512 the Gram diagonal is kept to well under 20% on average, and the
    measured error is about the Johnson-Lindenstrauss rate sqrt(2/k) or better, not a systematic bias."""
    student, names = student_for(train)
    fn = GradientFeatures(student, names, output_signs(C, 0), 512, 0)
    assert fn.width == 512
    d = distortion(fn, images(48))
    assert d["diagonal_relative_error"]["mean"] < 0.2
    assert d["off_diagonal_error"]["mean"] < 0.2
    errors = [
        distortion(GradientFeatures(student, names, fn.xi, 512, s), images(16))["diagonal_relative_error"]["mean"]
        for s in range(4)
    ]
    assert len(set(errors)) == 4  # the projection is regenerated from its seed: another seed, another draw


def test_one_sgd_step_is_predicted_to_first_order():
    """Finetuning with a tiny step: one SGD step on 1/2 sum_i (s(x_i) - y_i)^2 changes s on every sample by
    -eta K r to first order, K the exact gradient kernel (the features with the identity projection)."""
    student, names = student_for("last:1", torch.float64)
    xi = output_signs(C, 0)
    fn = GradientFeatures(student, names, xi, None, 0)
    x, y = images(24, torch.float64), torch.linspace(-1, 1, 24, dtype=torch.float64)
    G = fn(x)
    with torch.no_grad():
        a = student.cut.prefix(x)
    s0 = (student(a) @ xi / math.sqrt(C)).detach()
    train, r = slice(0, 16), (s0 - y)[:16]
    predicted = -(G @ G[train].T) @ r
    params = [p for _, p in sorted(student.named_parameters()) if p.requires_grad]
    start = [p.detach().clone() for p in params]
    gaps = []
    for eta in (1e-2, 1e-3, 1e-4):
        with torch.no_grad():
            for p, p0 in zip(params, start, strict=True):
                p.copy_(p0)
        opt = torch.optim.SGD(params, lr=eta)
        loss = 0.5 * ((student(a[train]) @ xi / math.sqrt(C) - y[train]) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            moved = student(a) @ xi / math.sqrt(C) - s0
        gaps.append(float((moved / eta - predicted).norm() / predicted.norm()))
    assert gaps[2] < 1e-3 and gaps[0] > gaps[1] > gaps[2]  # the gap is second order: it shrinks with eta


@pytest.fixture(scope="module")
def grads(tmp_path_factory, weak_weights):
    """Gradient features of digits: the weak network (head) and a strong one (last:1), 400 samples."""
    d = tmp_path_factory.mktemp("grad")
    strong_w = save_random(MODEL, d / "strong-weights.safetensors", 2)
    common = dict(proj_dim=256, limit=400, seed=0)
    weak = extract_gradients(
        DataOptions("digits"),
        BackboneSpec(MODEL, 32, str(weak_weights)),
        d / "w.safetensors",
        QUIET,
        train="head",
        **common,
    )
    strong = extract_gradients(
        DataOptions("digits"),
        BackboneSpec(MODEL, 32, str(strong_w)),
        d / "s.safetensors",
        QUIET,
        train="last:1",
        **common,
    )
    return d, weak, strong


@pytest.mark.slow
def test_extraction_records_what_it_is_and_the_distortion(grads):
    _, _, strong = grads
    art = store.load(strong, "embeddings")
    assert np.asarray(art["embeddings"]).shape == (400, 256)
    f = art.meta["features"]
    assert f["kind"] == "grad" and f["train"] == "last:1" and f["init"]["kind"] == "default"
    assert f["projection"]["k"] == 256 and sum(b["k"] for b in f["projection"]["blocks"]) == 256
    assert len(f["output_signs"]) == C and "pseudo-NTK" in f["outputs"]
    d = f["measured"]["distortion"]
    assert d["rows"] == 64 and 0 <= d["diagonal_relative_error"]["mean"] < 0.3


@pytest.mark.slow
def test_downstream_stages_run_on_gradient_features(grads):
    d, weak, strong = grads
    r = w2s("intrinsic-dim", strong, "--json")
    assert r.exit_code == 0, r.output
    dims = json.loads(r.stdout)["weak"]
    assert 1 <= dims["d"] <= dims["rank"] <= 256 and dims["participation_ratio"] >= 1 and dims["twonn"] > 0
    split = SplitOptions(n_labeled=100, n_pseudo=200, n_test=100)
    teacher = train_weak(weak, d / "t.safetensors", split=split, subspace=SubspaceOptions("auto"))
    pseudo = pseudolabel(teacher, d / "p.safetensors")
    result = fit_student(pseudo, strong, d / "r.safetensors", subspace=SubspaceOptions("auto"))
    t = store.read_meta(result)["trials"][0]
    assert set(t["error"]) == {"weak", "w2s", "strong_sft", "ceiling"}
    assert all(np.isfinite(v) and 0 < v < 1 for v in t["error"].values())
    assert t["accuracy"]["ceiling"] > 0.15  # above chance (0.1) on ten digits


@pytest.mark.slow
def test_bad_input_is_one_line(grads, tmp_path):
    d, weak, _ = grads
    base = ["extract", "--data", "digits", "--model", MODEL, "--no-pretrained", "--image-size", "32", "--limit", "50"]
    assert_user_error(w2s(*base, "--features", "grad", "-o", tmp_path / "a.safetensors"), "needs --train")
    r = w2s(*base, "--features", "grad", "--train", "head", "--proj-dim", "0", "-o", tmp_path / "b.safetensors")
    assert_user_error(r, "--proj-dim must be at least 1")
    result = d / "r.safetensors"
    if not result.exists():
        split = SplitOptions(n_labeled=100, n_pseudo=200, n_test=100)
        pseudo = pseudolabel(train_weak(weak, d / "t2.safetensors", split=split), d / "p2.safetensors")
        result = fit_student(pseudo, weak, d / "r2.safetensors")
    r = w2s(*base, "--features", "grad", "--train", "head", "--init", result, "-o", tmp_path / "c.safetensors")
    assert_user_error(r, "not a finetune result")
    assert not (tmp_path / "c.safetensors").exists()


@pytest.mark.slow
def test_init_reads_the_finetunes_cached_prefix_outputs(grads, tmp_path):
    """With --init, the gradients start at the finetune's LP-FT head and read the frozen prefix's outputs it
    cached (no images): the same features as from the images, to float rounding, and the record says which."""
    from w2s_cli.extraction.extract import extract
    from w2s_cli.options.recipe import FinetuneRecipe
    from w2s_cli.stages.finetune import finetune

    d, weak, _ = grads
    spec = BackboneSpec(MODEL, 32, str(d / "strong-weights.safetensors"))
    strong = extract(DataOptions("digits"), spec, tmp_path / "s.safetensors", QUIET, limit=400, seed=0)
    split = SplitOptions(n_labeled=100, n_pseudo=200, n_test=100)
    pseudo = pseudolabel(train_weak(weak, tmp_path / "t.safetensors", split=split), tmp_path / "p.safetensors")
    recipe = FinetuneRecipe(train="last:1", epochs=1)
    result = finetune(pseudo, strong, out=tmp_path / "ft.safetensors", recipe=recipe, extract=QUIET)
    common = dict(train="last:1", init=result, init_fit="strong_sft", proj_dim=128, limit=400, seed=0)
    cached = extract_gradients(DataOptions("digits"), spec, tmp_path / "g1.safetensors", QUIET, **common)
    f = store.read_meta(cached)["features"]
    assert f["inputs"]["kind"] == "cached prefix outputs" and f["init"]["fit"] == "strong_sft"
    assert f["measured"]["distortion"]["rows"] == 64
    (tmp_path / "activations").rename(tmp_path / "moved")  # the cache gone: from the images
    images = extract_gradients(DataOptions("digits"), spec, tmp_path / "g2.safetensors", QUIET, **common)
    assert store.read_meta(images)["features"]["inputs"] == {"kind": "images"}
    a, b = (np.asarray(store.load(p, "embeddings")["embeddings"]) for p in (cached, images))
    assert a.shape == (400, 128) and np.abs(a - b).max() <= 1e-4 * np.abs(b).max()
    head = np.asarray(store.load(result, "result")["start_coef_strong_sft"])
    assert not np.allclose(head, default_head(head.shape[0], C, 0)[0])  # the LP-FT head, not the default


@pytest.mark.slow
def test_features_at_a_checkpoint_are_those_at_its_weights_loaded_by_hand(grads, tmp_path):
    """--init-epoch K (and final): the W2S fit keeps each epoch's trained parameters, and the gradient features
    there equal the exact per-sample gradients (torch.func) of the network built by hand from the pretrained
    weights, the LP-FT head and that epoch's parameters; the record says which point."""
    from safetensors.torch import load_file

    from w2s_cli.extraction.extract import extract
    from w2s_cli.finetuning.network import load_trained
    from w2s_cli.options.recipe import FinetuneRecipe
    from w2s_cli.stages.finetune import finetune

    d, weak, _ = grads
    spec = BackboneSpec(MODEL, 32, str(d / "strong-weights.safetensors"))
    strong = extract(DataOptions("digits"), spec, tmp_path / "s.safetensors", QUIET, limit=400, seed=0)
    split = SplitOptions(n_labeled=100, n_pseudo=200, n_test=100)
    pseudo = pseudolabel(train_weak(weak, tmp_path / "t.safetensors", split=split), tmp_path / "p.safetensors")
    recipe = FinetuneRecipe(train="last:1", epochs=2, lr=3e-3, select="last")
    result = finetune(pseudo, strong, out=tmp_path / "ft.safetensors", recipe=recipe, extract=QUIET)
    fit = store.read_meta(result)["fits"]["w2s"]
    assert [p.rsplit("/", 1)[-1] for p in fit["epoch_weights"]] == ["epoch-1.safetensors", "epoch-2.safetensors"]
    common = dict(train="last:1", init=result, init_fit="w2s", proj_dim=None, limit=400, seed=0)
    art = store.load(result, "result")
    head = (np.asarray(art["start_coef_w2s"]), np.asarray(art["start_intercept_w2s"]))
    x = None
    for epoch, name in ((1, "epoch-1"), ("final", "final")):
        g = extract_gradients(
            DataOptions("digits"), spec, tmp_path / f"g-{name}.safetensors", QUIET, init_epoch=epoch, **common
        )
        made = store.read_meta(g)["features"]["init"]
        assert made["epoch"] == epoch and made["fit"] == "w2s"
        model = timm.create_model(MODEL).eval()
        model.load_state_dict(load_file(str(d / "strong-weights.safetensors")))
        student, names = gradient_student(model, MODEL, TrainSpec.parse("last:1"), head, 0)
        load_trained(student, load_file(str(tmp_path / "ft.safetensors.fits" / "w2s" / f"{name}.safetensors")))
        if x is None:
            from w2s_cli.diagnostics.grad_features import first_images
            from w2s_cli.finetuning.network import backbone_from_record
            from w2s_cli.inputs.sources import open_source

            bb = backbone_from_record(store.read_meta(strong), "strong")
            ids = np.asarray(store.load(g, "embeddings")["sample_ids"])[:5]
            x = first_images(bb, open_source(DataOptions("digits")), ids, torch.device("cpu"))
        xi = torch.tensor(store.read_meta(g)["features"]["output_signs"], dtype=torch.float32)
        expected = reference(student, names, xi, x).numpy()
        got = np.asarray(store.load(g, "embeddings")["embeddings"])[:5]
        assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()
    start = extract_gradients(DataOptions("digits"), spec, tmp_path / "g0.safetensors", QUIET, **common)
    a, b = (np.asarray(store.load(p, "embeddings")["embeddings"]) for p in (start, tmp_path / "g-final.safetensors"))
    assert not np.allclose(a, b)  # the kernel moved with the weights
    r = w2s(
        "extract",
        "--data",
        "digits",
        "--model",
        MODEL,
        "--weights",
        spec.weights,
        "--image-size",
        32,
        "--limit",
        400,
        "--features",
        "grad",
        "--train",
        "last:1",
        "--init",
        result,
        "--init-epoch",
        7,
        "-o",
        tmp_path / "bad.safetensors",
    )
    assert_user_error(r, "--init-epoch 7")
