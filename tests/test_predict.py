"""Label-light predictions of finetuned students from the after-kernel of their W2S finetune (issue 23): the
proxy path (`w2s proxy`: a short W2S finetune before the three) and the from-a-finetune path (`w2s finetune`,
`w2s predict`, `w2s run --student finetune`), on a tiny real timm model over digits; no label of the N pool or
of the test rows enters a prediction."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import QUIET, assert_user_error, copy_finetune_inputs, relabel, w2s

from w2s_cli.options import SubspaceOptions
from w2s_cli.options.recipe import FinetuneRecipe
from w2s_cli.store import artifact as store
from w2s_cli.studies.proxy import proxy_finetune

pytestmark = pytest.mark.slow  # finetunes from the session extraction

RECIPE = FinetuneRecipe(train="last:1", epochs=2, batch_size=32, lr=3e-3)
MODELS = {"weak", "w2s", "strong_sft", "ceiling"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, finetune_inputs):
    return copy_finetune_inputs(finetune_inputs, tmp_path_factory.mktemp("predict"))


def test_predictions_read_no_label_of_the_pool_or_the_test_rows(tiny, weak_emb, tmp_path):
    """A proxy's predictions, then the same predictions from copies of its inputs in which the true labels of
    the N pool rows and of the test rows are scrambled (in the pseudo-labels, the weak embeddings and the
    after-kernel features): bit-identical. (The W2S finetune itself reads no such label: test_finetune.py's
    ground-truth test.)"""
    from w2s_cli.diagnostics.predict import predict_from_kernel

    d, pseudo, strong = tiny
    path, cost = proxy_finetune(
        pseudo, strong, d / "proxy.safetensors", recipe=RECIPE, epochs=1, subspace=SubspaceOptions("20"), extract=QUIET
    )
    assert cost["proxy_seconds"] > 0 and cost["full_estimated_seconds"] > 0
    made = store.read_meta(path)["trials"][0]
    assert set(made["predicted"]["error"]) == MODELS and made["predicted"]["pgr"] is not None
    p = store.load(pseudo)
    hidden = np.concatenate([np.asarray(p["pseudo_rows"]), np.asarray(p["test_rows"])])

    def scramble(name, array):
        if name in ("labels", "pseudo_observed"):
            out = array.copy()
            where = hidden if name == "labels" else np.arange(len(out))
            out[where] = (out[where] + 1 + np.arange(len(where)) % 7) % 10
            return out
        return None

    features = store.resolve(made["after_kernel"]["features"], path)
    copies = {}
    for name, src in (("w", weak_emb), ("k", features), ("p", pseudo)):
        copies[name] = tmp_path / f"{name}.safetensors"
        relabel(src, copies[name], scramble)
    assert not np.array_equal(store.load(copies["p"])["pseudo_observed"], p["pseudo_observed"])
    meta = store.read_meta(copies["p"])  # the scrambled pseudo-labels point to the scrambled weak embeddings
    meta["embeddings"] = {**meta["embeddings"], **store.reference(store.load(copies["w"]), copies["p"])}
    art = store.load(copies["p"])
    store.save(store.Artifact("pseudolabels", meta, {k: np.asarray(art[k]) for k in art.names()}), copies["p"])
    again = predict_from_kernel(copies["p"], copies["k"], tmp_path / "kernel.safetensors").to_json()
    assert again["error"] == made["predicted"]["error"]
    assert (again["pgr"], again["opr"]) == (made["predicted"]["pgr"], made["predicted"]["opr"])


def test_finetune_carries_its_predictions_and_report_shows_them(tiny):
    """`w2s finetune` (no extra flag) writes the predictions from its W2S fit's after-kernel into its result;
    `report --json` carries them under `predicted` with the probe's keys, the table in its label-light column;
    `w2s predict` recomputes them (the same numbers)."""
    d, pseudo, strong = tiny
    out = d / "ft.safetensors"
    r = w2s("finetune", pseudo, "--strong", strong, "--train", "last:1", "--epochs", 2, "--subspace", 20,
            "--num-workers", 0, "-q", "-o", out)  # fmt: skip
    assert r.exit_code == 0, r.output
    j = json.loads(w2s("report", out, "--json").stdout)
    assert set(j["predicted"]["error"]) == MODELS and {"pgr", "opr", "method"} <= set(j["predicted"])
    assert "after-kernel" in j["predicted"]["method"]
    table = w2s("report", out).stdout
    assert "label-light prediction" in table and "label-light predictions: the probe's" in table
    again = w2s("predict", out, "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["predicted"]["error"] == j["predicted"]["error"]
    stored = store.read_meta(out)["trials"][0]["after_kernel"]
    assert stored["kernel"] == "embeddings" and stored["epoch"] == "final"


def test_predict_refuses_what_it_cannot_use(tiny, tmp_path):
    d, pseudo, strong = tiny
    probe = tmp_path / "probe.safetensors"
    assert w2s("fit-student", pseudo, "--strong", strong, "--subspace", 20, "-o", probe).exit_code == 0
    assert_user_error(w2s("predict", probe), "not a finetune result")
    out = d / "ft.safetensors"
    if out.exists():
        assert_user_error(w2s("predict", out, "--kernel", "magic"), "--kernel must be one of")
        assert_user_error(w2s("predict", out, "--epoch", "9"), "--epoch 9: fit w2s")
