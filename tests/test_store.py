"""Artifacts: the safetensors layout we stream, lazy row reads, atomic writes, records and references."""

import json
import os
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from w2s_cli import W2SError
from w2s_cli.store import artifact as store

# the fields of a record of each kind that a reader checks (store/records/), beside the dataset and samples
FIELDS = {
    "embeddings": {
        "model": {"name": "m", "weights": {"state_dict_sha256": "h" * 64}},
        "preprocessing": {"input_size": [3, 8, 8]},
    },
    "teacher": {
        "embeddings": {"path": "/x/e.safetensors"},
        "solver": "ridgeless",
        "link": "identity",
        "subspace": {"requested": "none", "dim": None, "rule": "none", "energy": 0.9, "width": 2, "rank": 2, "rows": 3},
        "split": {"seed": 7, "test_seed": None, "n_test": 1, "n_labeled": 1, "n_pseudo": 1},
        "label_noise": {"rate": 0.0},
        "fit": {"solver": "ridgeless", "rows": 1},
        "seconds": 0.1,
    },
}


def _art(kind="teacher", **tensors):
    meta = store.base_meta(kind, seed=7)
    meta.update({"dataset": {"name": "d", "fingerprint": "f" * 64}, "sample_ids_sha256": "a" * 64}, **FIELDS[kind])
    tensors = tensors or {"coef": np.arange(6, dtype=np.float64).reshape(3, 2), "rows": np.array([3, 1, 2])}
    return store.Artifact(kind, meta, tensors)


def test_round_trip_keeps_tensors_dtypes_record_and_umask(tmp_path):
    old = os.umask(0o027)
    try:
        path = store.save(_art(), tmp_path / "t.safetensors")
    finally:
        os.umask(old)
    back = store.load(path, "teacher")
    np.testing.assert_array_equal(back["coef"], np.arange(6).reshape(3, 2))
    assert back["coef"].dtype == np.float64 and back["rows"].dtype == np.int64
    assert back.meta["seed"] == 7 and back.meta["schema_version"] == store.SCHEMA_VERSION
    assert back.meta["artifact_id"] == back.meta["content_sha256"] and len(back.meta["artifact_id"]) == 64
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind
    assert (path.stat().st_mode & 0o777) == 0o640  # the user's umask, not mkstemp's 0600
    # the safetensors library reads our streamed layout
    plain = load_file(str(path))
    np.testing.assert_array_equal(plain["rows"], [3, 1, 2])


def test_content_hash_identifies_the_tensors(tmp_path):
    a = store.save(_art(), tmp_path / "a.safetensors")
    b = store.save(_art(), tmp_path / "b.safetensors")
    c = store.save(_art(coef=np.zeros((3, 2))), tmp_path / "c.safetensors")
    ids = [store.read_meta(p)["artifact_id"] for p in (a, b, c)]
    assert ids[0] == ids[1] != ids[2]


def test_chunked_tensor_streams_to_the_same_file(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 7)).astype(np.float32)
    whole = store.save(_art("embeddings", embeddings=X, ids=np.arange(1000)), tmp_path / "w.safetensors")
    blocks = store.Chunked(X.shape, np.dtype(np.float32), (X[i : i + 300] for i in range(0, 1000, 300)))
    streamed = store.save(_art("embeddings", embeddings=blocks, ids=np.arange(1000)), tmp_path / "s.safetensors")
    assert store.read_meta(whole)["artifact_id"] == store.read_meta(streamed)["artifact_id"]
    np.testing.assert_array_equal(load_file(str(streamed))["embeddings"], X)


def test_lazy_rows_in_any_order(tmp_path):
    X = np.arange(50_000 * 3, dtype=np.float32).reshape(50_000, 3)
    path = store.save(_art("embeddings", embeddings=X), tmp_path / "x.safetensors")
    art = store.load(path)
    for idx in (np.array([5, 3, 49_999, 0]), np.arange(100, 20_000), np.arange(0, 50_000, 997), np.array([], int)):
        np.testing.assert_array_equal(art.rows("embeddings", idx), X[idx])
    blocks = list(art.chunks("embeddings", np.arange(10, 30_000, 3), chunk=4096))
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), X[10:30_000:3])
    assert art.shape("embeddings") == (50_000, 3) and "embeddings" not in art.tensors  # never read whole


def test_non_finite_values_are_refused_as_they_are_read(tmp_path):
    X = np.ones((20_000, 3), np.float32)
    X[[12_345, 17_000], 1] = np.nan
    X[9, 0] = -np.inf
    basis = np.ones((4, 2))
    basis[2, 1] = np.inf
    path = store.save(_art("embeddings", embeddings=X, basis=basis, ids=np.arange(4)), tmp_path / "x.safetensors")
    art = store.load(path, "embeddings", what="strong embeddings")
    np.testing.assert_array_equal(art.rows("embeddings", np.arange(10, 12_000)), X[10:12_000])  # rows read: fine
    with pytest.raises(
        W2SError,
        match=r"strong embeddings .*x\.safetensors: tensor 'embeddings': 1 of the rows "
        r"read hold NaN or inf \(first: row 12345\)",
    ):
        list(art.chunks("embeddings", np.arange(100, 20_000), chunk=4096))
    with pytest.raises(W2SError, match=r"'embeddings': 2 of the rows read hold NaN or inf \(first: row 9\)"):
        art.rows("embeddings", np.array([17_000, 9, 3]))
    with pytest.raises(W2SError, match=r"tensor 'basis': 1 of the rows read hold NaN or inf \(first: row 2\)"):
        art["basis"]
    np.testing.assert_array_equal(art["ids"], np.arange(4))  # integer tensors have no NaN to check


def test_wrong_kind_and_foreign_files_are_refused(tmp_path):
    path = store.save(_art(), tmp_path / "t.safetensors")
    with pytest.raises(W2SError, match="is a 'teacher' artifact, expected result"):
        store.load(path, "result")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(W2SError, match="not a safetensors file"):
        store.load(tmp_path / "junk.safetensors")
    save_file({"x": np.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(W2SError, match="without a w2s record"):
        store.load(tmp_path / "plain.safetensors")
    with pytest.raises(W2SError, match="no such file"):
        store.load(tmp_path / "missing.safetensors")
    with pytest.raises(W2SError, match="is a directory"):
        store.load(tmp_path)
    for record, pattern in (
        ("[1, 2]", "not a JSON object"),
        ("{", "not JSON"),
        ('{"schema_version": 2, "kind": "teacher"}', "without 'embeddings'"),
    ):
        save_file({"x": np.zeros(2)}, str(tmp_path / "r.safetensors"), {"w2s": record})
        with pytest.raises(W2SError, match=pattern):
            store.load(tmp_path / "r.safetensors")


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    path = store.save(_art(), tmp_path / "t.safetensors")
    before = path.read_bytes()
    bad = _art(oops=np.array([object()], dtype=object))
    with pytest.raises((TypeError, ValueError)):
        store.save(bad, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.safetensors"]


def test_mismatched_records_are_refused():
    a, b = _art().meta, _art().meta
    store.require_same_samples(a, b, "A", "B")
    b = json.loads(json.dumps(b))
    b["sample_ids_sha256"] = "b" * 64
    with pytest.raises(W2SError, match="different samples"):
        store.require_same_samples(a, b, "A", "B")
    b["dataset"]["fingerprint"] = "0" * 64
    with pytest.raises(W2SError, match="different datasets"):
        store.require_same_samples(a, b, "A", "B")


def test_references_resolve_after_the_folder_moves(tmp_path):
    src = store.save(_art(), tmp_path / "run" / "in.safetensors")
    (tmp_path / "run" / "sub").mkdir()
    ref = store.reference(store.load(src), tmp_path / "run" / "sub" / "out.safetensors")
    assert ref["relpath"] == "../in.safetensors" and ref["artifact_id"] == store.read_meta(src)["artifact_id"]
    shutil.move(tmp_path / "run", tmp_path / "moved")
    found = store.resolve(ref, tmp_path / "moved" / "sub" / "out.safetensors")
    assert found == tmp_path / "moved" / "in.safetensors" and found.exists()


def test_ids_hash_depends_on_order():
    assert store.ids_sha256(np.array([1, 2])) != store.ids_sha256(np.array([2, 1]))
