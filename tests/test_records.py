"""Typed result records: each one survives a round trip through JSON, a file of the previous schema (2) is
still read and reported, one of an older schema is refused with its version, a bad field is refused when a
record is built; the records of kernel-check, intrinsic-dim, rank-teachers, --dry-run and synth keep the
layout those commands print; every artifact read is checked by its kind's record, the one schema check."""

import copy
import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from w2s_cli import W2SError
from w2s_cli.report.render import json_text, report_blocks
from w2s_cli.stages.summary import load_result, summary
from w2s_cli.store import artifact as store
from w2s_cli.store.records import ARTIFACTS as ARTIFACT_RECORDS
from w2s_cli.store.records import (
    Analysis,
    Basis,
    CostEstimate,
    EmbeddingsRecord,
    FitRecord,
    IntrinsicDim,
    KernelCheck,
    LabelNoiseRecord,
    Metrics,
    PseudoLabelsRecord,
    Ranking,
    RecordError,
    ResultRecord,
    StudentRecord,
    Sweep,
    SweepPoint,
    TeacherRecord,
    Trial,
    read_record,
)

MODELS = ("weak", "w2s", "strong_sft", "ceiling")


def _per(*values):
    return dict(zip(MODELS, values, strict=True))


def _metrics(shift=0.0, n_test=400):
    return {
        "error": _per(0.048 + shift, 0.044 + shift, 0.035 + shift, 0.026 + shift),
        "error_stderr": _per(0.0016, 0.0013, 0.0015, 0.0013),
        "n_test": n_test,
        "pgr": 0.176 + shift,
        "pgr_stderr": 0.049,
        "opr": 0.788,
        "opr_stderr": 0.025,
        "accuracy": _per(0.80, 0.82, 0.91, 0.92),
        "accuracy_stderr": _per(0.020, 0.019, 0.015, 0.014),
    }


def _analysis():
    return {
        "dimensions": {
            "d_w": 40,
            "d_s": 100,
            "d_sw": 12.86,
            "d_sw_null": 3.08,
            "d_sw_corrected": 10.84,
            "m": 1300,
            "rank_w": 40,
            "rank_s": 100,
            "canonical_correlations": [0.99, 0.97],
        },
        "variance": {k: {"exact": 0.1, "theory": 0.2, "ratio": 0.5} for k in MODELS},
        "variance_note": None,
        "predicted": {"error": _per(0.05, 0.045, 0.036, 0.027), "pgr": 0.2, "opr": 0.8, "method": "loo"},
        "near_interpolation": [],
        "fits": {k: {"rows": 300, "rank": 40, "condition_number": 14.4} for k in MODELS},
        "sigma2": {"weak": 0.03, "strong": 0.02},
        "decomposition": {
            **{k: {"noise": 0.02, "bias": 0.01, "variance": 0.005} for k in MODELS},
            "w2s": {"noise": 0.02, "bias": 0.01, "variance": 0.005, "bias_inherited": 0.008, "bias_rest": 0.002},
        },
    }


def _basis(dim):
    return {"requested": str(dim), "dim": dim, "rule": "fixed", "energy": 0.9, "width": 1280, "rank": 215, "rows": 1300}


def _v2_result(trials=None):
    """The JSON record of a `result` artifact as w2s wrote it with schema 2 (the layout kept by schema 3)."""
    trial = {**_metrics(), "seed": 0, "n_labeled": 300, "n_pseudo": 1000, "pseudo_label_accuracy": 0.79}
    trial["analysis"] = _analysis()
    meta = store.base_meta("result", 0)
    meta.update(
        schema_version=2,
        artifact_id="0" * 64,
        dataset={"name": "digits", "fingerprint": "f" * 64},
        sample_ids_sha256="a" * 64,
        split={"seed": 0, "test_seed": 0, "n_test": 400, "n_labeled": 300, "n_pseudo": 1000},
        weak_embeddings={"artifact_id": "w" * 64},
        strong_embeddings={"artifact_id": "s" * 64},
        weak_model="tf_efficientnet_lite0",
        weak_input_size=[3, 24, 24],
        strong_model="tf_efficientnet_lite2",
        strong_input_size=[3, 64, 64],
        task="classification",
        label_noise={"rate": 0.0, "kind": "symmetric flips", "seed": [0, 2]},
        labels="soft",
        solver={"teacher": "ridgeless", "student": "ridgeless"},
        subspace={"weak": _basis(40), "strong": {**_basis(100), "energy_held": 0.92}},
        fits={k: {"solver": "ridgeless", "rows": 300, "rank": 40, "condition_number": 14.4} for k in MODELS},
        n_labeled=300,
        n_pseudo=1000,
        n_test=400,
        trials=trials or [trial],
        analysis_note=None,
        seconds={"train_weak": 1.0, "fit_student": 0.5},
    )
    return meta


def _write(path, meta):
    save_file({"test_rows": np.arange(3)}, str(path), {"w2s": json.dumps(meta)})
    return path


def _through_json(record):
    return type(record).from_json(json.loads(json_text(record)))


def test_each_record_survives_a_round_trip_through_json():
    meta = _v2_result()
    result = ResultRecord.from_json(meta)
    assert _through_json(result) == result
    assert result.to_json() == json.loads(json.dumps(meta))  # the layout written is schema 2's
    trial = result.trials[0]
    assert _through_json(trial) == trial and _through_json(trial.metrics) == trial.metrics
    assert _through_json(trial.analysis) == trial.analysis
    for record in (
        FitRecord("ridge", rows=30, extra={"alpha": 0.1}),
        FitRecord("finetune", rows=30, chosen_epoch=3, extra={"log": [1, 2]}),
        Basis.from_json(_basis(40)),
        LabelNoiseRecord(0.1, "symmetric flips", [0, 2]),
        StudentRecord("finetune", {"train": "head"}, "LP-FT head", {"kind": "cached"}, "cpu"),
    ):
        assert _through_json(record) == record
    finetuned = Trial(Metrics.from_json(_metrics()), 1, 300, 1000, init=Metrics.from_json(_metrics(0.01, None)))
    assert _through_json(finetuned) == finetuned and "n_test" not in finetuned.to_json()["init"]


def test_a_schema_2_result_is_read_and_reported_and_an_older_one_is_refused(tmp_path):
    path = _write(tmp_path / "v2.safetensors", _v2_result())
    s = summary(load_result(path))
    assert s.metrics.pgr == 0.176 and s.weak_input_size == 24 and s.theory.dimensions.d_sw == 12.86
    printed = json.loads(json_text(s))
    assert printed["dimensions"]["basis"]["strong"]["energy_held"] == 0.92 and printed["trials"] == 1
    assert "pgr_stderr" not in printed["predicted"] and printed["decomposition"]["w2s"]["bias_rest"] == 0.002
    assert any("PGR = 0.176" in line for line in report_blocks(s)[0].lines)
    old = _write(tmp_path / "v1.safetensors", {**_v2_result(), "schema_version": 1})
    with pytest.raises(W2SError, match="schema 1, written by an older or newer w2s .this w2s reads 2 and 3"):
        load_result(old)


def test_summary_of_several_trials_is_their_mean_with_stderr_over_trials(tmp_path):
    first = _v2_result()["trials"][0]
    second = {**copy.deepcopy(first), **_metrics(0.002), "seed": 1}
    s = summary(load_result(_write(tmp_path / "r.safetensors", _v2_result([first, second]))))
    assert s.trials == 2 and s.seeds == [0, 1]
    assert s.metrics.error["weak"] == pytest.approx(0.049) and s.metrics.error_stderr["weak"] == pytest.approx(0.001)
    assert s.theory.predicted.over_trials and "pgr_stderr" in s.to_json()["predicted"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m["trials"][0]["error"].pop("ceiling"), "'error' has no 'ceiling'"),
        (lambda m: m["trials"][0].update(pgr="high"), "'pgr' is 'high', not a number"),
        (lambda m: m.update(n_labeled=0), "'n_labeled' is 0, not a whole number >= 1"),
        (lambda m: m.update(label_noise={"rate": 2.0}), r"'label_noise.rate' is 2.0, not in \[0, 1\]"),
        (lambda m: m["trials"][0]["analysis"].pop("sigma2"), "'analysis' has no 'sigma2'"),
        (
            lambda m: m["trials"][0]["analysis"]["near_interpolation"].append("moon"),
            "'near_interpolation' names a model",
        ),
    ],
)
def test_a_record_with_a_bad_field_is_refused(tmp_path, edit, message):
    meta = _v2_result()
    edit(meta)
    with pytest.raises(RecordError, match=message):
        ResultRecord.from_json(meta)
    with pytest.raises(W2SError, match=f"corrupt w2s record: {message}"):
        load_result(_write(tmp_path / "bad.safetensors", meta))


def test_records_refuse_bad_fields_when_built():
    good = Metrics.from_json(_metrics())
    with pytest.raises(RecordError, match="'n_test' is 0"):
        Metrics(good.error, good.error_stderr, 0.1, None, 0.9, None, n_test=0)
    with pytest.raises(RecordError, match="'accuracy' and 'accuracy_stderr' go together"):
        Metrics(good.error, good.error_stderr, 0.1, None, 0.9, None, n_test=10, accuracy=good.accuracy)
    with pytest.raises(RecordError, match="a trial without 'n_test'"):
        Trial(Metrics.from_json(_metrics(n_test=None)), 0, 300, 1000)
    with pytest.raises(RecordError, match="'trials' is not a non-empty list"):
        ResultRecord(trials=(), dataset={"name": "d"}, n_labeled=1, n_pseudo=1, n_test=1)
    with pytest.raises(RecordError, match="'summary' of a sweep point is a Summary record"):
        SweepPoint({"n-pseudo": "300"}, "n-pseudo=300", "r.safetensors", summary={"pgr": 0.1})
    with pytest.raises(RecordError, match="'trials' is 0"):
        Sweep(["n-pseudo"], 0, (), {})
    with pytest.raises(RecordError, match="'sigma2' has no 'strong'"):
        Analysis.from_json({**_analysis(), "sigma2": {"weak": 0.1}})


def _v2_teacher():
    meta = store.base_meta("teacher", 0)
    meta.update(
        schema_version=2,
        artifact_id="t" * 64,
        embeddings={"path": "/x/weak.safetensors", "relpath": "weak.safetensors", "artifact_id": "w" * 64},
        dataset={"name": "digits", "fingerprint": "f" * 64},
        sample_ids_sha256="a" * 64,
        task="classification",
        solver="ridgeless",
        link="identity",
        subspace=_basis(40),
        split={
            "seed": 0,
            "test_seed": 0,
            "n_test": 400,
            "n_labeled": 300,
            "n_pseudo": 1000,
            "n_pool": 1397,
            "test_from_dataset_split": False,
        },
        label_noise={"rate": 0.0, "kind": "symmetric flips", "seed": [0, 2]},
        fit={"solver": "ridgeless", "rows": 300, "rank": 40, "condition_number": 14.4},
        sigma2=0.03,
        loo_error=0.05,
        test_error=0.048,
        test_accuracy=0.80,
        seconds=1.5,
    )
    return meta


def _v2_pseudolabels():
    teacher = _v2_teacher()
    meta = store.base_meta("pseudolabels", 0)
    meta.update(
        schema_version=2,
        artifact_id="p" * 64,
        teacher={"path": "/x/t.safetensors", "relpath": "t.safetensors", "artifact_id": "t" * 64}
        | {k: teacher[k] for k in ("solver", "subspace", "fit")},
        **{k: teacher[k] for k in ("embeddings", "dataset", "sample_ids_sha256", "task", "label_noise")},
        split={**teacher["split"], "n_pseudo": 800, "n_pseudo_drawn": 1000},
        labels="soft",
        pseudo_label_accuracy=0.79,
        teacher_sigma2=0.03,
        teacher_loo_error=0.05,
        seconds={"train_weak": 1.5, "pseudolabel": 0.1},
    )
    return meta


def test_teacher_and_pseudo_label_records_read_schema_2_and_write_its_layout():
    for kind, meta in ((TeacherRecord, _v2_teacher()), (PseudoLabelsRecord, _v2_pseudolabels())):
        record = kind.from_json(meta)
        assert record.to_json() == json.loads(json.dumps(meta))
        assert _through_json(record) == record
    pseudo = PseudoLabelsRecord.from_json(_v2_pseudolabels())
    assert pseudo.seed == 0 and pseudo.split.n_pseudo_drawn == 1000 and pseudo.teacher.fit.rank == 40
    assert "n_pseudo_drawn" not in TeacherRecord.from_json(_v2_teacher()).split.to_json()


def test_teacher_and_pseudo_label_records_refuse_bad_fields(tmp_path):
    with pytest.raises(RecordError, match="'link' is 'tanh', not identity or softmax"):
        TeacherRecord.from_json({**_v2_teacher(), "link": "tanh"})
    with pytest.raises(RecordError, match="'split.n_test' is -1"):
        TeacherRecord.from_json({**_v2_teacher(), "split": {**_v2_teacher()["split"], "n_test": -1}})
    with pytest.raises(RecordError, match="'labels' is 'medium', not hard or soft"):
        PseudoLabelsRecord.from_json({**_v2_pseudolabels(), "labels": "medium"})
    bad = tmp_path / "p.safetensors"
    save_file({"x": np.zeros(1)}, str(bad), {"w2s": json.dumps({**_v2_pseudolabels(), "teacher_sigma2": "big"})})
    with pytest.raises(W2SError, match=r"pseudolabels .*p.safetensors: corrupt w2s record: 'teacher_sigma2' is 'big'"):
        read_record(store.load(bad), PseudoLabelsRecord)


def _embeddings_meta(**extra):
    return {
        "schema_version": 1,
        "kind": "embeddings",
        "model": {"name": "resnet18", "weights": {"state_dict_sha256": "h" * 64}, "width": 512},
        "preprocessing": {"input_size": [3, 32, 32], "mode": "cpu"},
        "dataset": {"name": "digits", "fingerprint": "f" * 64},
        "sample_ids_sha256": "a" * 64,
        "limit": None,
        "extraction": {"device": "cpu", "seconds": 1.0},
        **extra,
    }


def test_embeddings_record_reads_old_layouts_and_says_what_identifies_them():
    old = EmbeddingsRecord.from_json(_embeddings_meta())  # schema 1: no task, no classes, no request
    assert old.task == "classification" and old.classes is None and old.request is None
    assert old.to_json() == _embeddings_meta() and _through_json(old) == old
    assert old.signature == {
        "model": "resnet18",
        "state_dict_sha256": "h" * 64,
        "input_size": [3, 32, 32],
        "dataset_fingerprint": "f" * 64,
        "sample_ids_sha256": "a" * 64,
    }
    grads = EmbeddingsRecord.from_json(_embeddings_meta(features={"kind": "grad"}, limit=100))
    assert grads.same_samples_and_weights(old) and grads.features != old.features
    with pytest.raises(RecordError, match="'model.weights' has no 'state_dict_sha256'"):
        EmbeddingsRecord.from_json(_embeddings_meta(model={"name": "resnet18", "weights": {}}))
    with pytest.raises(RecordError, match="'limit' is 0"):
        EmbeddingsRecord.from_json(_embeddings_meta(limit=0))


# the records of the diagnostics and studies: the layouts their commands print with --json (those of w2s at
# 521f2e9, captured from kernel-check, intrinsic-dim, rank-teachers and run --dry-run on digits, numbers cut)
def _measured(value, stderr=0.002):
    return {"value": value, "stderr": stderr}


def _kernel_fit(linearised=False):
    fit = {
        "trained_parameters": 48406,
        "weight_change": 0.207,
        "output_change_rms": 4.37,
        "unexplained": _measured(1.05, 0.023),
        "chosen_epoch": 1,
        "stored_outputs_gap": 0.0,
    }
    if linearised:
        basis = {
            "dim": 9,
            "rule": "energy 0.9",
            "energy": 0.9,
            "width": 64,
            "rank": 54,
            "rows": 400,
            "energy_held": 0.9,
        }
        fit["linearised"] = {"features": "/x/g-w2s.safetensors", "rows": 300, "basis": basis}
    kinds = ("start", "finetuned", "first_order", "linearised") if linearised else ("start", "finetuned", "first_order")
    return {**fit, "error": {k: _measured(0.06 + i) for i, k in enumerate(kinds)}}


def _kernel_check():
    return {
        "result": "/x/ft.safetensors",
        "recipe": "finetuned: last 1 block, LP-FT, squared error, 1 epochs",
        "n_test": 200,
        "error_weak": _measured(0.061),
        "fits": {"w2s": _kernel_fit(True), "strong_sft": _kernel_fit(), "ceiling": _kernel_fit(True)},
        "pgr": {k: _measured(v, 0.1) for k, v in (("start", -0.53), ("finetuned", 1.7), ("linearised", None))},
    }


def _matrix(**neighbours):
    return {
        "m": 1797,
        "width": 256,
        "d": 33,
        "energy": 0.99,
        "d_at": {"0.90": 13, "0.95": 18, "0.99": 33},
        "participation_ratio": 7.86,
        "rank": 256,
        **neighbours,
    }


def _intrinsic(method="subspace"):
    out = {
        "energy": 0.99,
        "center": True,
        "estimators": {"spectral": "spectral: ...", "twonn": "TwoNN ...", "mle": "MLE ..."},
        "weak": _matrix(twonn=8.5, mle=7.07),
        "strong": {**_matrix(twonn=8.55, mle=6.76), "width": 96, "rank": 59},
        "d_sw": 7.73,
        "d_sw_null": 0.40,
    }
    if method == "authors":
        return {**out, "method": "authors: ..."}
    return {**out, "d_sw_corrected": 7.52, "canonical_correlations": [0.97, 0.91], "method": "subspace: ..."}


def _ranked(weak, measured):
    errors = {"error_w2s": 0.0589, "error_w2s_stderr": 0.0017, "error_weak": 0.0513, "pgr": -2.79, "opr": 0.897}
    out = {"weak": weak, "d_w": 20.0, "d_s": 20.0, "d_sw": 6.15, "predicted": errors}
    return {**out, "measured": {**errors, "pgr": None}} if measured else out


def _ranking(measured=False):
    out = {
        "strong": "test_resnet@32",
        "n_labeled": 200,
        "n_pseudo": 600,
        "trials": 1,
        "teachers": [_ranked("test_efficientnet@32", measured), _ranked("test_efficientnet@24", measured)],
        "near_ties": [
            {"teachers": ["test_efficientnet@32", "test_efficientnet@24"], "difference": 0.0013, "stderr": 7e-4}
        ],
    }
    if measured:  # spearman: undefined below three teachers, and printed so
        out.update(spearman=None, max_relative_error=0.0229)
    return {**out, "configuration": {"strong": "test_resnet@32", "measure": measured}}


def _estimate():
    backbone = {"label": "test_resnet@32", "images": 0, "cached": True, "width": 96, "seconds_per_image": 5e-4}
    return {
        "backbones": [{**backbone, "path": "run/strong.safetensors"}, {**backbone, "cached": False, "path": None}],
        "rows": 1797,
        "trials": 4,
        "predictions": 0,
        "prefix_images": 0,
        "finetune_epochs": 0,
        "finetune_step_rows": 0,
        "finetune_forward_rows": 0,
        "jobs": 4,
        "disk_bytes": 2112000,
        "seconds": {"extraction": 0.0, "prefix_cache": 0.0, "fits": 4.27, "finetuning": 0.0},
        "total_seconds": 2.13,
    }


@pytest.mark.parametrize(
    ("kind", "layout"),
    [
        (KernelCheck, _kernel_check()),
        (KernelCheck, {**_kernel_check(), "fits": {"w2s": _kernel_fit()}}),
        (IntrinsicDim, _intrinsic()),
        (IntrinsicDim, _intrinsic("authors")),
        (IntrinsicDim, {**_intrinsic(), "artifact": "id.safetensors", "plot": "id.png"}),
        (IntrinsicDim, {"energy": 0.99, "center": False, "estimators": {}, "weak": _matrix()}),
        (Ranking, _ranking()),
        (Ranking, _ranking(measured=True)),
        (CostEstimate, _estimate()),
    ],
)
def test_the_records_of_diagnostics_and_studies_keep_the_layout_their_commands_print(kind, layout):
    record = kind.from_json(layout)
    assert record.to_json() == layout and list(record.to_json()) == list(layout)  # keys, their order, values
    assert json.loads(json_text(record)) == json.loads(json.dumps(layout))  # what --json prints
    assert _through_json(record) == record


def test_the_synth_records_keep_the_layout_synth_prints():
    from w2s_cli.numerics.synth import SynthResult, SynthSweep

    config = {"ambient": 50, "d_s": 8, "d_w": 24, "shared": 3, "n_labeled": 90, "n_pseudo": 300, "sigma": 0.7}
    config.update(trials=300, seed=0, rest="random")
    six = {"weak": 0.178, "w2s": 0.0416, "strong_sft": 0.0456, "ceiling": 0.0105, "pgr": 0.815, "opr": None}
    one = {"config": config, "d_sw": 5.2, **dict.fromkeys(("measured", "stderr", "predicted", "asymptotic"), six)}
    one["limits"] = {"pgr": 0.78, "opr": 1.53, "n_pseudo_threshold": 17}
    sweep = {
        "sweep": "sigma",
        "plot": "s.png",
        "csv": "s.csv",
        "points": [{"value": 0.5, **one}, {"value": 1.0, **one}],
    }
    for kind, layout in ((SynthResult, one), (SynthSweep, sweep)):
        record = kind.from_json(layout)
        assert record.to_json() == layout and json.loads(json_text(record)) == layout
        assert kind.from_json(json.loads(json_text(record))) == record
    with pytest.raises(ValueError, match="'measured' is not an object with weak, w2s"):
        SynthResult.from_json({**one, "measured": {"weak": 0.1}})


def test_the_records_of_diagnostics_and_studies_refuse_bad_fields_when_built():
    with pytest.raises(RecordError, match="'n_test' is 0"):
        KernelCheck.from_json({**_kernel_check(), "n_test": 0})
    without_errors = {k: v for k, v in _kernel_fit().items() if k != "error"}
    with pytest.raises(RecordError, match="'fit' has no 'error'"):
        KernelCheck.from_json({**_kernel_check(), "fits": {"w2s": without_errors}})
    with pytest.raises(RecordError, match="'d_sw' goes with the 'strong' matrix"):
        IntrinsicDim.from_json({**_intrinsic(), "strong": None})
    half = _ranking()
    half["teachers"][0] = _ranked("test_efficientnet@32", measured=True)
    with pytest.raises(RecordError, match="'teachers' are measured all or none"):
        Ranking.from_json(half)
    with pytest.raises(RecordError, match="'jobs' is -1, not a whole number"):
        CostEstimate.from_json({**_estimate(), "jobs": -1})
    with pytest.raises(RecordError, match="'near_ties.teachers' is"):
        Ranking.from_json({**_ranking(), "near_ties": [{"teachers": ["a"], "difference": 0.1, "stderr": 0.1}]})


# one schema check: store/artifact.py reads the header, schema and kind; the kind's record checks the fields,
# as every artifact is read (today's messages: tests/test_catalogue.py)
def _intrinsic_artifact():
    meta = store.base_meta("intrinsic_dim", 0)
    meta.update(artifact_id="i" * 64, inputs={"weak": "/x/w.safetensors", "strong": None})
    return {**meta, "result": {k: v for k, v in _intrinsic().items() if k != "canonical_correlations"}}


ARTIFACT_METAS = {
    "embeddings": lambda: {**_embeddings_meta(), "artifact_id": "e" * 64},
    "teacher": _v2_teacher,
    "pseudolabels": _v2_pseudolabels,
    "result": _v2_result,
    "intrinsic_dim": _intrinsic_artifact,
}


@pytest.mark.parametrize(("kind", "key"), [("embeddings", "model"), ("teacher", "split"), ("pseudolabels", "teacher"),
                                           ("result", "trials"), ("intrinsic_dim", "result")])  # fmt: skip
def test_every_artifact_is_checked_by_its_record_as_it_is_read(tmp_path, kind, key):
    meta = ARTIFACT_METAS[kind]()
    art = store.load(_write(tmp_path / "good.safetensors", meta))
    assert art.record == ARTIFACT_RECORDS[kind].from_json(meta) and read_record(art, type(art.record)) is art.record
    bad = _write(tmp_path / "bad.safetensors", {k: v for k, v in meta.items() if k != key})
    message = f"{kind} .*bad.safetensors: corrupt w2s record: a '{kind}' artifact without '{key}'"
    for read in (store.load, store.read_meta):
        with pytest.raises(W2SError, match=message):
            read(bad)
    no_id = _write(tmp_path / "no-id.safetensors", {k: v for k, v in meta.items() if k != "artifact_id"})
    with pytest.raises(W2SError, match=f"corrupt w2s record: a '{kind}' artifact without 'artifact_id'"):
        store.load(no_id)


def test_a_bad_field_deep_in_a_record_is_refused_when_the_artifact_is_read(tmp_path):
    """Not later, by the stage that reads the field: the record is built (and checked) by the reader."""
    teacher = _v2_teacher()
    path = _write(tmp_path / "t.safetensors", {**teacher, "split": {**teacher["split"], "n_test": -1}})
    with pytest.raises(W2SError, match=r"teacher .*t.safetensors: corrupt w2s record: 'split.n_test' is -1"):
        store.load(path, "teacher")
    bad = _intrinsic_artifact()
    bad["result"]["weak"]["d_at"]["0.90"] = "13"
    with pytest.raises(W2SError, match="intrinsic_dim .*: corrupt w2s record: 'd_at.0.90' is '13'"):
        store.read_meta(_write(tmp_path / "i.safetensors", bad))
