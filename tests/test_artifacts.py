import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from w2s_cli import W2SError, artifacts


def _art(kind="teacher"):
    meta = artifacts.base_meta(kind, seed=7)
    meta.update({"dataset": {"name": "d", "fingerprint": "f" * 64}, "sample_ids_sha256": "a" * 64})
    return artifacts.Artifact(
        kind, meta, {"coef": np.arange(6, dtype=np.float64).reshape(3, 2), "rows": np.array([3, 1, 2], dtype=np.int64)}
    )


def test_round_trip_keeps_tensors_dtypes_and_record(tmp_path):
    path = artifacts.save(_art(), tmp_path / "t.safetensors")
    back = artifacts.load(path, "teacher")
    np.testing.assert_array_equal(back["coef"], np.arange(6).reshape(3, 2))
    assert back["coef"].dtype == np.float64 and back["rows"].dtype == np.int64
    assert back.meta["seed"] == 7 and back.meta["schema_version"] == artifacts.SCHEMA_VERSION
    assert "torch" in back.meta["versions"] and back.meta["command"]
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind


def test_wrong_kind_and_foreign_files_are_refused(tmp_path):
    path = artifacts.save(_art(), tmp_path / "t.safetensors")
    with pytest.raises(W2SError, match="is a 'teacher' artifact, expected result"):
        artifacts.load(path, "result")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(W2SError, match="not a safetensors file"):
        artifacts.load(tmp_path / "junk.safetensors")
    save_file({"x": np.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(W2SError, match="without a w2s record"):
        artifacts.load(tmp_path / "plain.safetensors")
    with pytest.raises(W2SError, match="no such file"):
        artifacts.load(tmp_path / "missing.safetensors")


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    path = artifacts.save(_art(), tmp_path / "t.safetensors")
    before = path.read_bytes()
    bad = _art()
    bad.tensors["oops"] = np.array([object()], dtype=object)  # cannot be serialised
    with pytest.raises((TypeError, ValueError)):
        artifacts.save(bad, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.safetensors"]


def test_mismatched_records_are_refused():
    a, b = _art().meta, _art().meta
    artifacts.require_same_samples(a, b, "A", "B")
    b = json.loads(json.dumps(b))
    b["sample_ids_sha256"] = "b" * 64
    with pytest.raises(W2SError, match="different samples"):
        artifacts.require_same_samples(a, b, "A", "B")
    b["dataset"]["fingerprint"] = "0" * 64
    with pytest.raises(W2SError, match="different datasets"):
        artifacts.require_same_samples(a, b, "A", "B")


def test_ids_hash_depends_on_order():
    assert artifacts.ids_sha256(np.array([1, 2])) != artifacts.ids_sha256(np.array([2, 1]))
