"""Writing a file so that readers see the old file or the whole new one, never part of one.

The data goes to a hidden temporary beside the file, which then replaces it (``os.replace`` is
atomic on one filesystem). When writing fails - a full disk, an interrupt - the temporary is
removed and the old file is left as it was: nothing half-written stays behind to fill the disk or
be taken for the file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def replace_via_temporary(path: str | Path, write: Callable[[Path], object]) -> None:
    """``write(temporary)`` then replace ``path`` by it; on any failure remove it and re-raise."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_bytes_atomically(path: str | Path, data: bytes) -> None:
    replace_via_temporary(path, lambda temporary: temporary.write_bytes(data))
