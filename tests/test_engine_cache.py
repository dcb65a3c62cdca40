"""The versioned engine cache (pure Python): keys, file names, lookup policy, sidecar checks."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest

from edge_had.build.engine_cache import (
    EngineCacheError,
    EngineKey,
    entry_paths,
    lookup,
    read_sidecar,
    sidecar_path,
    store,
    verify_engine,
)

ONNX_SHA = "3fa8c2d1" + "0" * 56
ENGINE = b"serialized engine bytes " * 100


def _key(**changes: object) -> EngineKey:
    key = EngineKey.for_line_widths(
        ONNX_SHA, "10.3.0.30", "sm_87", "int8", bands=224, min_width=256, opt_width=1024, max_width=2048
    )
    return dataclasses.replace(key, **changes)  # type: ignore[arg-type]


CHANGES = {
    "onnx_sha256": {"onnx_sha256": "f" * 64},
    "tensorrt_version": {"tensorrt_version": "11.4.1.0"},
    "sm": {"sm": "sm_110"},
    "precision": {"precision": "fp16"},
    "min_shape": {"min_shape": (1, 224, 1, 128)},
    "opt_shape": {"opt_shape": (1, 224, 1, 640)},
    "max_shape": {"max_shape": (1, 224, 1, 4096)},
    "lines": {"min_shape": (1, 224, 4, 256), "opt_shape": (1, 224, 4, 1024), "max_shape": (1, 224, 4, 2048)},
    "input_name": {"input_name": "other"},
    "gpu": {"gpu": "Orin (nvgpu) Nano"},  # boards of one SM (sm_87) differ
    "workspace_bytes": {"workspace_bytes": 256 << 20},  # other tactics allowed
    "max_lines": {"max_shape": (1, 224, 100, 2048)},
}


def test_same_inputs_give_the_same_key() -> None:
    assert _key() == _key()
    assert _key().digest == _key().digest
    assert _key().name == _key().name


def test_name_is_readable() -> None:
    name = _key().name
    for part in ("int8", "trt10.3.0.30", "sm_87", "b224", "w256-1024-2048", ONNX_SHA[:8]):
        assert part in name, (part, name)
    assert name.endswith(_key().digest[:12])


@pytest.mark.parametrize("field", CHANGES)
def test_any_change_gives_another_key_and_a_miss(field: str, tmp_path: Path) -> None:
    store(tmp_path, _key(), ENGINE)
    changed = _key(**CHANGES[field])
    assert changed != _key()
    assert changed.digest != _key().digest
    assert changed.name != _key().name
    assert lookup(tmp_path, changed) is None
    assert lookup(tmp_path, _key()) is not None


def test_store_then_lookup_hits(tmp_path: Path) -> None:
    path = store(tmp_path / "cache", _key(), ENGINE)
    assert path == entry_paths(tmp_path / "cache", _key())[0]
    assert lookup(tmp_path / "cache", _key()) == path
    assert path.read_bytes() == ENGINE
    record = read_sidecar(sidecar_path(path))
    assert record["key"] == _key().to_dict()
    assert record["engine_bytes"] == len(ENGINE)
    assert EngineKey.from_dict(json.loads(json.dumps(record["key"]))) == _key()


def test_absent_entry_is_a_silent_miss(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert lookup(tmp_path, _key()) is None
    assert not caplog.records


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "empty"])
def test_corrupt_or_truncated_engine_is_not_loaded(
    damage: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = store(tmp_path, _key(), ENGINE)
    data = bytearray(ENGINE)
    if damage == "flip a byte":
        data[len(data) // 2] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        assert lookup(tmp_path, _key()) is None
    assert path.name in caplog.text and "corrupt or truncated" in caplog.text


def test_sidecar_of_another_build_is_not_loaded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = store(tmp_path, _key(), ENGINE)
    sidecar = sidecar_path(path)
    record = json.loads(sidecar.read_text())
    record["key"]["tensorrt_version"] = "10.13.0.35"  # same file name, other build
    sidecar.write_text(json.dumps(record))
    with caplog.at_level(logging.WARNING):
        assert lookup(tmp_path, _key()) is None
    assert "differs in: tensorrt_version" in caplog.text


@pytest.mark.parametrize("sidecar_text", [None, "{not json", '{"format": 99}', '{"format": 1, "key": 3}'])
def test_missing_or_unreadable_sidecar_is_not_loaded(tmp_path: Path, sidecar_text: str | None) -> None:
    path = store(tmp_path, _key(), ENGINE)
    if sidecar_text is None:
        sidecar_path(path).unlink()
    else:
        sidecar_path(path).write_text(sidecar_text)
    assert lookup(tmp_path, _key()) is None


def test_store_replaces_a_stale_entry(tmp_path: Path) -> None:
    path = store(tmp_path, _key(), ENGINE)
    path.write_bytes(b"garbage")
    assert lookup(tmp_path, _key()) is None
    store(tmp_path, _key(), ENGINE + b"rebuilt")
    assert lookup(tmp_path, _key()) == path
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_full_disk_while_caching_an_engine_leaves_no_partial_file(tmp_path: Path, monkeypatch) -> None:
    import errno

    real = Path.write_bytes

    def full_disk(self: Path, data: bytes) -> int:
        real(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(OSError, match="No space"):
        store(tmp_path, _key(), ENGINE)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == [] and lookup(tmp_path, _key()) is None


def test_empty_engine_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EngineCacheError, match="empty"):
        store(tmp_path, _key(), b"")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"onnx_sha256": "abc"}, "64 lower-case hex"),
        ({"tensorrt_version": "ten"}, "10.3.0.30"),
        ({"sm": "87"}, "sm_87"),
        ({"precision": "bf16"}, "precision"),
        ({"min_shape": (1, 224, 1, 4096)}, "min <= opt <= max"),
        ({"min_shape": (1, 224, 1)}, "4 positive ints"),
        ({"min_shape": (1, 224, 1, 0)}, "4 positive ints"),
        ({"min_shape": (1, 100, 1, 256), "opt_shape": (1, 224, 1, 1024)}, "band count is fixed"),
    ],
)
def test_invalid_keys_are_rejected(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _key(**changes)


# --------------------------------------------------------------------------- verify_engine (runtime)


def test_verify_accepts_a_matching_engine(tmp_path: Path) -> None:
    path = store(tmp_path, _key(), ENGINE)
    assert verify_engine(path, tensorrt_version="10.3.0.30", sm="sm_87", precision="int8") == _key()


def test_an_engine_built_with_tf32_loads_with_a_warning(tmp_path: Path, caplog) -> None:
    """Engines built before `edge-had build` cleared TF32 (keys without the field read tf32 true)
    still load, saying their FP32 layers ran TF32 and how to rebuild; new ones say nothing."""
    runtime = {"tensorrt_version": "10.3.0.30", "sm": "sm_87", "precision": "int8"}
    with caplog.at_level("WARNING"):
        verify_engine(store(tmp_path / "new", _key(tf32=False), ENGINE), **runtime)
        assert "TF32" not in caplog.text
        verify_engine(store(tmp_path / "old", _key(), ENGINE), **runtime)
    assert "built with TF32 allowed" in caplog.text and "rebuild" in caplog.text.lower()


@pytest.mark.parametrize(
    ("runtime", "message"),
    [
        ({"tensorrt_version": "10.13.0.35", "sm": "sm_87", "precision": "int8"}, "TensorRT 10.3.0.30"),
        ({"tensorrt_version": "10.3.0.30", "sm": "sm_90", "precision": "int8"}, "built for sm_87"),
        ({"tensorrt_version": "10.3.0.30", "sm": "sm_87", "precision": "fp16"}, "precision is int8"),
    ],
)
def test_verify_names_the_file_and_the_fix(tmp_path: Path, runtime: dict[str, str], message: str) -> None:
    path = store(tmp_path, _key(), ENGINE)
    with pytest.raises(EngineCacheError, match=message) as raised:
        verify_engine(path, **runtime)
    assert str(path) in str(raised.value) and "edge-had build" in str(raised.value)


def test_verify_checks_the_gpu_model_when_both_are_known(tmp_path: Path) -> None:
    """Boards of one SM differ (Orin Nano, NX, AGX): the cache key recorded the GPU, but an engine
    given by path was loaded on another board unchecked (a review)."""
    runtime = {"tensorrt_version": "10.3.0.30", "sm": "sm_87", "precision": "int8"}
    path = store(tmp_path, _key(gpu="Orin (AGX)"), ENGINE)
    with pytest.raises(EngineCacheError, match=r"built on Orin \(AGX\), this GPU is Orin \(Nano\)"):
        verify_engine(path, **runtime, gpu="Orin (Nano)")
    assert verify_engine(path, **runtime, gpu="Orin (AGX)") == _key(gpu="Orin (AGX)")
    unrecorded = store(tmp_path / "old", _key(), ENGINE)  # a sidecar from before the GPU was recorded
    assert verify_engine(unrecorded, **runtime, gpu="Orin (Nano)") == _key()


def test_verify_rejects_a_corrupt_engine(tmp_path: Path) -> None:
    path = store(tmp_path, _key(), ENGINE)
    path.write_bytes(ENGINE[:-1])
    with pytest.raises(EngineCacheError, match="corrupt or truncated"):
        verify_engine(path, tensorrt_version="10.3.0.30", sm="sm_87")


def test_verify_without_sidecar_loads_unchecked(tmp_path: Path) -> None:
    path = tmp_path / "from_trtexec.engine"
    path.write_bytes(ENGINE)
    assert verify_engine(path, tensorrt_version="10.3.0.30", sm="sm_87") is None


def test_verify_missing_engine(tmp_path: Path) -> None:
    with pytest.raises(EngineCacheError, match="no such engine file"):
        verify_engine(tmp_path / "nothing.engine", tensorrt_version="10.3.0.30", sm="sm_87")
