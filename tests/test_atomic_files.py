"""edge_had.atomic_files: a failed write leaves the old file and no temporary behind."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from edge_had.atomic_files import replace_via_temporary, write_bytes_atomically


def test_a_write_replaces_the_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "engine.bin"
    target.write_bytes(b"old")
    write_bytes_atomically(target, b"new contents")
    assert target.read_bytes() == b"new contents" and [p.name for p in tmp_path.iterdir()] == ["engine.bin"]


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_a_failed_write_keeps_the_old_file_and_removes_its_part(
    tmp_path: Path, failure: BaseException
) -> None:
    """Before, a full disk left the half-written temporary (an engine: tens of MB) beside the file."""
    target = tmp_path / "timing.cache"
    target.write_bytes(b"old")

    def half_then_fail(temporary: Path) -> None:
        temporary.write_bytes(b"half of it")
        raise failure

    with pytest.raises(type(failure)):
        replace_via_temporary(target, half_then_fail)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["timing.cache"]
