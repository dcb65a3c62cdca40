"""The numerics fingerprint: the same wherever training computes the same, another where the math
libraries take other kernels, recorded by training and said when a run continues another
machine's checkpoint."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edge_had.train.numerics import fingerprint_at, numerics_fingerprint, numerics_note
from edge_had.train.runner import CHECKPOINT_DIR, TRAIN_CONFIG_FILE, train
from tests.test_train import _config, _scenes

FINGERPRINT_IN_A_FRESH_PROCESS = (
    "import torch; torch.set_num_threads(1); "
    "from edge_had.train.numerics import numerics_fingerprint; print(numerics_fingerprint())"
)


def fresh_process_fingerprint(**environment: str) -> str:
    finished = subprocess.run(
        [sys.executable, "-c", FINGERPRINT_IN_A_FRESH_PROCESS],
        capture_output=True,
        text=True,
        env={**os.environ, **environment},
        check=True,
    )
    return finished.stdout.strip()


def test_the_fingerprint_is_the_same_in_every_process_of_one_machine() -> None:
    state = torch.random.get_rng_state()
    here = fingerprint_at(1)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random stream untouched
    assert len(here) == 16 and int(here, 16) >= 0
    assert fresh_process_fingerprint() == here == fingerprint_at(1)


@pytest.mark.cpu_feature
@pytest.mark.skipif(
    torch.backends.cpu.get_cpu_capability() != "AVX512",
    reason="needs an AVX-512 CPU to run oneDNN and MKL on AVX2 instead",
)
def test_the_fingerprint_changes_when_the_math_libraries_take_other_kernels() -> None:
    """oneDNN and MKL held to AVX2 on an AVX-512 machine: the shipped recipe's release gave other
    weights that way (0943a3cb... against 97d695d2... here); the fingerprint must say so."""
    held_back = fresh_process_fingerprint(ONEDNN_MAX_CPU_ISA="AVX2", MKL_ENABLE_INSTRUCTIONS="AVX2")
    assert held_back != fingerprint_at(1)


def test_a_run_records_its_numerics_and_a_checkpoint_from_elsewhere_is_said(tmp_path: Path, capsys) -> None:
    scenes = _scenes(1)
    config = _config(tmp_path, steps_per_epoch=2)
    first = train(config, scenes=scenes)
    record = json.loads((Path(config.out) / TRAIN_CONFIG_FILE).read_text())
    assert record["numerics"] == {
        "fingerprint": fingerprint_at(1),
        "threads": 1,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    assert record["numerics_changed_from"] is None
    # the newest checkpoint as if another machine had written it
    folder = Path(config.out) / CHECKPOINT_DIR
    newest = folder / json.loads((folder / "latest.json").read_text())["file"]
    checkpoint = torch.load(newest, weights_only=True)
    assert checkpoint["numerics_fingerprint"] == fingerprint_at(1)
    checkpoint["numerics_fingerprint"] = "0123456789abcdef"
    torch.save(checkpoint, newest)
    capsys.readouterr()
    resumed = train(dataclasses.replace(config, resume=True), scenes=scenes)
    said = capsys.readouterr().err
    assert "numerics fingerprint 0123456789abcdef, here" in said and "not be bit-identical" in said
    assert json.loads((Path(config.out) / TRAIN_CONFIG_FILE).read_text())["numerics_changed_from"] == (
        "0123456789abcdef"
    )
    assert all(torch.equal(a, b) for a, b in zip(
        first["networks"]["spectral"].state_dict().values(),
        resumed["networks"]["spectral"].state_dict().values(),
        strict=True,
    ))  # fmt: skip  # here the arithmetic is the same: the note is all that differs


def test_the_note_is_said_only_for_another_known_fingerprint() -> None:
    assert numerics_note(None, "a", "x") is None  # a checkpoint from before fingerprints
    assert numerics_note("a", None, "x") is None  # a run on a GPU: no bits to compare
    assert numerics_note("a", "a", "x") is None
    assert "numerics fingerprint b, here a" in str(numerics_note("b", "a", "the checkpoint resumed"))
    assert numerics_fingerprint() == numerics_fingerprint()


def test_a_gpu_run_records_no_fingerprint() -> None:
    """CUDA training is not bit-reproducible even on one device: no fingerprint to compare (a
    review: every GPU-trained cached fold model would have been called another machine's). Nothing
    runs on the device here."""
    from edge_had.train.numerics import numerics_record

    assert numerics_record("cuda")["fingerprint"] is None
    assert numerics_record("cpu")["fingerprint"] == numerics_fingerprint()
