"""Write a score map as an ENVI image that lies on its scene's map.

The image is one float64 band stored BSQ, little-endian (``name.hdr`` + ``name.img``), lines and
samples as the scene's rows and cols; invalid pixels stay NaN (the header says so). When the
scene came from an ENVI file, the georeferencing entries of its header (:data:`GEOREFERENCE_KEYS`:
map info, coordinate system string, tie points, RPCs, subset origin) are copied *verbatim* - the
text between the braces, not the ``spectral`` package's parse of it, which splits a WKT string at
its commas - so ENVI, QGIS or GDAL draw the scores over the scene, pixel on pixel. Both files are
written atomically, the data file first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from edge_had.atomic_files import replace_via_temporary, write_bytes_atomically
from edge_had.errors import SceneError

GEOREFERENCE_KEYS = (
    "map info",
    "coordinate system string",
    "projection info",
    "geo points",
    "pixel size",
    "x start",
    "y start",
    "rpc info",
)
ENVI_FLOAT64 = 5  # ENVI "data type" code


def header_entries(text: str, keys: Iterable[str]) -> dict[str, str]:
    """The values of ``keys`` in an ENVI header's text, verbatim (``{...}`` values may span lines;
    keys match in any case and spacing)."""
    entries: dict[str, str] = {}
    for key in keys:
        pattern = r"^[ \t]*" + r"\s+".join(map(re.escape, key.split())) + r"[ \t]*=[ \t]*"
        match = re.search(pattern + r"(\{[^}]*\}|[^\n]*)", text, flags=re.IGNORECASE | re.MULTILINE)
        if match is not None and match.group(1).strip():
            entries[key] = match.group(1).strip()
    return entries


def georeference_of(header: str | Path) -> dict[str, str]:
    """The georeferencing entries of an ENVI header file (empty when it has none), its text read
    as the scene's header is (:func:`~edge_had.io.envi.header_text`: a Latin-1 coordinate system
    string is copied as written, not with replacement characters)."""
    from edge_had.io.envi import header_text

    path = Path(header)
    try:
        text, _ = header_text(path.read_bytes())
    except OSError as error:
        raise SceneError(f"cannot read the ENVI header for its map information ({error})", path) from error
    return header_entries(text, GEOREFERENCE_KEYS)


def data_file_of(header: str | Path) -> Path:
    """``scores.img`` beside ``scores.hdr``."""
    return Path(header).with_suffix(".img")


def write_score_image(
    header: str | Path,
    scores: np.ndarray,
    *,
    band_name: str,
    description: str,
    georeference: dict[str, str] | None = None,
) -> Path:
    """Write ``scores`` (rows x cols) as ``header`` (.hdr) + its ``.img``; returns the data file."""
    header = Path(header)
    if header.suffix.lower() != ".hdr":
        raise ValueError(f"{header}: an ENVI header is named .hdr")
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"a score map is 2-D (rows x cols), got shape {scores.shape}")
    rows, cols = scores.shape
    entries = {
        "description": "{" + _braced_text(description) + "}",
        "samples": str(cols),
        "lines": str(rows),
        "bands": "1",
        "header offset": "0",
        "file type": "ENVI Standard",
        "data type": str(ENVI_FLOAT64),
        "interleave": "bsq",
        "byte order": "0",
        "band names": "{" + _braced_text(band_name) + "}",
        **(georeference or {}),
    }
    data = data_file_of(header)
    header.parent.mkdir(parents=True, exist_ok=True)
    little_endian = np.ascontiguousarray(scores, dtype="<f8")
    replace_via_temporary(data, lambda temporary: little_endian.tofile(temporary))
    lines = ["ENVI", *(f"{key} = {value}" for key, value in entries.items())]
    write_bytes_atomically(header, ("\n".join(lines) + "\n").encode("utf-8"))
    return data


def _braced_text(text: str) -> str:
    """Text safe inside an ENVI ``{...}`` value (no braces, one line)."""
    return " ".join(text.replace("{", "(").replace("}", ")").split())
