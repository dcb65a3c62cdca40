"""keep_freed_memory: on glibc, a freed 100 MB block stays in the process (reused, no new page
faults); without it glibc returns the block to the kernel, and release_freed_memory returns it
when asked. Run in subprocesses: malloc settings are per process."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from edge_had.allocator import keep_freed_memory

PROBE = """
import sys
import numpy as np
from edge_had.allocator import keep_freed_memory, release_freed_memory

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

kept = keep_freed_memory() if sys.argv[1].startswith("keep") else False
block = np.ones(100 * 2**20 // 8)  # 100 MB, touched
before = rss_mb()
del block
if sys.argv[1] == "keep, then release":
    release_freed_memory()
print(kept, round(before - rss_mb()))
"""


def _released_mb(mode: str) -> tuple[str, int]:
    """(whether the thresholds were set, MB the process gave back when the block was freed)."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc only"
)
def test_freed_memory_is_kept_only_when_asked() -> None:
    assert _released_mb("default") == ("False", 100)  # glibc unmaps a freed 100 MB block
    kept, released = _released_mb("keep")
    assert kept == "True" and released == 0
    assert _released_mb("keep, then release") == ("True", 100)  # handed back when asked


def test_turned_off_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_HAD_KEEP_FREED_MEMORY", "0")
    assert keep_freed_memory() is False
