"""`w2s kernel-check`: the first-order (kernel-regime) check of a finetune from its own weights, on a tiny real
timm model over real digits images: a tiny learning rate stays in the kernel regime (the linearisation
explains the output change), a large one leaves it."""

from __future__ import annotations

import json

import pytest
from conftest import QUIET, assert_user_error, copy_finetune_inputs, w2s

from w2s_cli.diagnostics.kernel_check import kernel_check
from w2s_cli.options import BackboneSpec, DataOptions
from w2s_cli.options.recipe import FinetuneRecipe
from w2s_cli.stages.finetune import finetune

pytestmark = pytest.mark.slow  # finetunes from the session extraction


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, finetune_inputs):
    """Digits: the conftest weak teacher's pseudo-labels, and a tiny random-weight strong network (a copy)."""
    return copy_finetune_inputs(finetune_inputs, tmp_path_factory.mktemp("kernel"))


def finetuned(tiny, lr: float):
    d, pseudo, strong = tiny
    recipe = FinetuneRecipe(train="last:1", epochs=1, batch_size=32, lr=lr, select="last", warmup_epochs=0)
    return finetune(pseudo, strong, out=d / f"ft-{lr:g}.safetensors", recipe=recipe, extract=QUIET)


def test_a_tiny_step_stays_in_the_kernel_regime_and_a_large_one_leaves_it(tiny):
    small, large = kernel_check(finetuned(tiny, 1e-5)), kernel_check(finetuned(tiny, 3e-2))
    for r in (small, large):
        for f in r.fits.values():
            assert f.stored_outputs_gap < 1e-5  # the check's f(x; θ1) is the finetune's own test output
    for name in ("w2s", "strong_sft", "ceiling"):
        s, g = small.fits[name], large.fits[name]
        assert 0 < s.weight_change < g.weight_change
        assert s.unexplained.value < 0.05 < g.unexplained.value
        e = {k: m.value for k, m in s.error.items()}
        assert (
            abs(e["first_order"] - e["finetuned"]) < 0.05 * abs(e["finetuned"] - e["start"]) + 1e-9
        )  # to first order, the linearisation's error is the finetune's


def test_cli_table_json_and_bad_input(tiny):
    d, pseudo, strong = tiny
    result = d / "ft-1e-05.safetensors"
    if not result.exists():
        finetuned(tiny, 1e-5)
    r = w2s("kernel-check", result, "--json")
    assert r.exit_code == 0, r.output
    assert set(json.loads(r.stdout)["fits"]) == {"w2s", "strong_sft", "ceiling"}
    r = w2s("kernel-check", result)
    assert r.exit_code == 0 and "unexplained by J dθ" in r.stdout and "W2S student" in r.stdout
    from w2s_cli.stages.student import fit_student

    linear = fit_student(pseudo, strong, d / "linear.safetensors")
    assert_user_error(w2s("kernel-check", linear), "not a finetune result")
    assert_user_error(w2s("kernel-check", d / "missing.safetensors"), "missing.safetensors")


def test_linearised_finetune_from_gradient_features(tiny):
    """--grads FIT=GRADS: the LP-FT start plus the ridgeless fit of the residual on gradient features made at
    that start; features made at another fit's start, or not gradient features, are refused."""
    from w2s_cli.diagnostics.grad_features import extract_gradients

    d, pseudo, strong = tiny
    result = finetuned(tiny, 3e-2)
    spec = BackboneSpec("test_efficientnet", 32, str(d / "strong-weights.safetensors"))
    common = dict(train="last:1", init=result, proj_dim=64)
    g = {
        f: extract_gradients(DataOptions("digits"), spec, d / f"g-{f}.safetensors", QUIET, init_fit=f, **common)
        for f in ("w2s", "ceiling")
    }
    r = kernel_check(result, grads=g)
    for f in ("w2s", "ceiling"):
        lin = r.fits[f]
        assert lin.linearised.rows == {"w2s": 300, "ceiling": 400}[f] and lin.linearised.basis["dim"] <= 50
        e = lin.error
        assert 0 < e["linearised"].value < 1 and e["linearised"].value != e["start"].value
    assert "linearised" not in r.fits["strong_sft"].error and r.pgr["linearised"].value is not None
    cli = w2s("kernel-check", result, "--grads", f"ceiling={g['w2s']}")
    assert_user_error(cli, "made at the start of fit w2s, not of ceiling")
    assert_user_error(w2s("kernel-check", result, "--grads", f"w2s={strong}"), "not gradient features")
    assert_user_error(w2s("kernel-check", result, "--grads", "w2s"), "--grads takes FIT=GRADS")
    assert_user_error(w2s("kernel-check", result, "--grads", f"teacher={g['w2s']}"), "the fits are")
