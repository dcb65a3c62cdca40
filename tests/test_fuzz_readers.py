"""Fuzzed readers: arbitrary bytes as .mat / .npy / .h5 and mangled ENVI headers give a scene or
a clear SceneError - never another exception, a hang or a crash. Bounded for CI: a fixed number
of examples per format and a per-example deadline."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_had.errors import SceneError
from edge_had.io import load_scene

FUZZ = settings(
    max_examples=60, deadline=2000, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


def load_or_clear_error(path: Path) -> None:
    try:
        scene = load_scene(path)
    except SceneError as error:
        assert str(path) in str(error) or path.name in str(error)  # names the file
        return
    assert scene.cube.ndim == 3 and scene.cube.dtype == np.float32


def _valid_npy_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.random.default_rng(0).random((4, 5, 3)).astype(np.float32))
    return buffer.getvalue()


@FUZZ
@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".mat", ".npy", ".h5"]))
def test_random_bytes_give_a_clear_error(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"scene{suffix}"
        path.write_bytes(data)
        load_or_clear_error(path)


@FUZZ
@given(cut=st.integers(min_value=0, max_value=len(_valid_npy_bytes()) - 1), flip=st.integers(0, 255))
def test_truncated_or_corrupted_npy_gives_a_clear_error(cut: int, flip: int) -> None:
    data = bytearray(_valid_npy_bytes())
    data[cut] ^= flip
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "scene.npy"
        path.write_bytes(bytes(data[: max(cut, 1)]) if flip % 2 else bytes(data))
        load_or_clear_error(path)


HEADER_LINES = [
    "ENVI",
    "samples = 5",
    "lines = 4",
    "bands = 3",
    "header offset = 0",
    "file type = ENVI Standard",
    "data type = 4",
    "interleave = bsq",
    "byte order = 0",
    "wavelength = {400, 500, 600}",
    "bbl = {1, 0, 1}",
    "data ignore value = -1",
]


@FUZZ
@given(
    keep=st.lists(st.booleans(), min_size=len(HEADER_LINES), max_size=len(HEADER_LINES)),
    junk=st.text(max_size=40),
    value=st.sampled_from(["-3", "0", "abc", "1e9", "{", "}", "", "99999999"]),
    target=st.integers(0, len(HEADER_LINES) - 1),
)
def test_mangled_envi_headers_give_a_clear_error(
    keep: list[bool], junk: str, value: str, target: int
) -> None:
    lines = [line for line, kept in zip(HEADER_LINES, keep, strict=True) if kept or line == "ENVI"]
    if target < len(lines) and "=" in lines[target]:
        lines[target] = lines[target].split("=")[0] + "= " + value
    lines.append(junk.replace("\x00", ""))
    with tempfile.TemporaryDirectory() as folder:
        header = Path(folder) / "scene.hdr"
        header.write_text("\n".join(lines) + "\n")
        (Path(folder) / "scene.img").write_bytes(np.random.default_rng(1).random(60).astype("<f4").tobytes())
        load_or_clear_error(header)
