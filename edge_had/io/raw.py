"""What a format reader hands back before validation, and the one place library errors become SceneError.

Each format module (MATLAB, HDF5, ENVI, ``.npy``) returns a :class:`RawScene`: arrays exactly as
stored, already in (rows, cols, bands) order, plus what the file says about bands and no-data.
:func:`edge_had.io.readers.load_scene` turns it into a :class:`~edge_had.io.scene.Scene` through
:func:`~edge_had.io.scene.make_scene`, so every format shares one validation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_had.errors import SceneError

#: A cube's axes in storage order for each interleave (ENVI's names; .mat, HDF5 and .npy files
#: are read as ``bip`` unless told otherwise).
LAYOUTS = {
    "bsq": ("bands", "rows", "cols"),
    "bil": ("rows", "bands", "cols"),
    "bip": ("rows", "cols", "bands"),
}


def to_rows_cols_bands(interleave: str) -> tuple[int, int, int]:
    """The transpose that turns a cube stored in ``interleave`` order into (rows, cols, bands)."""
    stored = LAYOUTS[interleave]
    rows, cols, bands = (stored.index(axis) for axis in ("rows", "cols", "bands"))
    return rows, cols, bands


@dataclass
class RawScene:
    """Unvalidated arrays of one scene file; ``cube`` is (rows, cols, bands) in its stored dtype."""

    cube: np.ndarray
    gt: np.ndarray | None = None
    wavelengths: np.ndarray | None = None
    fwhm: np.ndarray | None = None
    good_bands: np.ndarray | None = None
    no_data_value: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@contextmanager
def reading(path: Path, what: str) -> Iterator[None]:
    """Re-raise any library exception inside the block as a :class:`SceneError` naming ``path``.

    ``what`` says which kind of file was being read ("MATLAB v5 file", ...). The original
    exception is chained (``raise ... from``) so its traceback stays available for debugging.
    A :class:`SceneError` raised inside the block passes through unchanged.
    """
    try:
        yield
    except SceneError:
        raise
    except Exception as exc:  # libraries raise anything from OSError to zlib.error or KeyError
        raise SceneError(f"cannot read {what} ({type(exc).__name__}: {exc})", path) from exc
