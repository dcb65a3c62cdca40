"""Read ENVI images (``.hdr`` header + raw data file, BIL/BIP/BSQ) through the ``spectral`` package.

The data file is memory-mapped (``numpy.memmap`` in its storage order, viewed as (lines, samples,
bands) = (rows, cols, bands)) in its stored dtype and byte order, whatever the file's interleave
(bsq, bil or bip, any case; spectral parses the header). From the header: ``wavelength`` and
``fwhm`` (converted to nm using ``wavelength units``, dropped when that unit is not a length:
:mod:`edge_had.io.units`), ``bbl`` (bad-band list -> ``good_bands``) and ``data ignore value``
(-> no-data value). A data file shorter than the header promises is reported as truncated, a
longer one as misdescribed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edge_had.errors import SceneError
from edge_had.io.raw import LAYOUTS, RawScene, reading, to_rows_cols_bands
from edge_had.io.units import band_centres_nm

HEADER_SUFFIXES = (".hdr", ".HDR")


def header_beside(data_path: Path) -> Path | None:
    """The ENVI header of a data file (``scene.hdr`` or ``scene.img.hdr`` beside ``scene.img``)."""
    for suffix in HEADER_SUFFIXES:
        for candidate in (data_path.with_suffix(suffix), data_path.with_name(data_path.name + suffix)):
            if candidate != data_path and candidate.is_file():
                return candidate
    return None


def envi_files(path: Path) -> tuple[Path, Path]:
    """``(header, data file)`` of an ENVI image given by either of them."""
    header = path if path.suffix.lower() == ".hdr" else header_beside(path)
    if header is None:
        raise SceneError("no ENVI header (.hdr) beside this data file", path)
    data = path if header != path else Path(_open_image(header, None, path).filename)
    return header, data


def read_envi(header: Path, data: Path | None = None, *, source: Path | None = None) -> RawScene:
    """The memory-mapped cube and band metadata of an ENVI image; errors name ``source`` (default: header)."""
    source = header if source is None else source
    image = _open_image(header, data, source)
    metadata: Mapping[str, Any] = image.metadata
    interleave = _interleave(metadata, source)
    cube = _memmap(image, interleave, source)
    units = metadata.get("wavelength units")
    wavelengths, fwhm, note = band_centres_nm(
        _header_floats(metadata, "wavelength", source), _header_floats(metadata, "fwhm", source), units
    )
    return RawScene(
        cube=cube,
        wavelengths=wavelengths,
        fwhm=fwhm,
        good_bands=_good_bands(metadata, source),
        no_data_value=_no_data_value(metadata, source),
        meta={
            "format": "envi",
            "dtype": str(np.dtype(image.dtype)),
            "interleave": interleave,
            "byte_order": "big" if int(metadata.get("byte order", 0)) == 1 else "little",
            "header": str(header),
            "data_file": str(image.filename),
            "wavelength_units": units,
            "notes": [] if note is None else [note],
        },
    )


def _open_image(header: Path, data: Path | None, source: Path) -> Any:
    import spectral.io.envi as spectral_envi  # lazy: only ENVI files need the spectral package

    with reading(source, "ENVI file"):
        image = spectral_envi.open(str(header), None if data is None else str(data))
    if isinstance(image, spectral_envi.SpectralLibrary):
        raise SceneError("is an ENVI spectral library, not an image", source)
    return image


def _interleave(metadata: Mapping[str, Any], source: Path) -> str:
    """The header's interleave, case and spaces aside (spectral itself reads anything but exactly
    'bil'/'BIL'/'bip'/'BIP' as BSQ: a 'Bip' file came back scrambled)."""
    value = str(metadata.get("interleave", "bsq")).strip().lower()
    if value not in LAYOUTS:
        raise SceneError(
            f"unknown ENVI interleave {metadata.get('interleave')!r}: expected bsq, bil or bip", source
        )
    return value


def _memmap(image: Any, interleave: str, source: Path) -> np.ndarray:
    """Map the data file as a (rows, cols, bands) view after checking it holds exactly the samples
    the header describes (a larger file means a wrong data type, size or offset: its samples would
    be misread, not merely extra)."""
    rows, cols, bands = image.shape
    dtype = np.dtype(image.dtype)  # with the header's byte order
    expected = image.offset + rows * cols * bands * dtype.itemsize
    actual = Path(image.filename).stat().st_size
    if actual != expected:
        problem = "is truncated" if actual < expected else "is larger than its header describes"
        hint = (
            "" if actual < expected else " (check 'data type', 'lines', 'samples', 'bands', 'header offset')"
        )
        raise SceneError(
            f"ENVI data file {image.filename} {problem}: {actual} bytes, the header needs {expected}{hint}",
            source,
        )
    sizes = {"rows": rows, "cols": cols, "bands": bands}
    stored = LAYOUTS[interleave]
    with reading(source, "ENVI data file"):
        data = np.memmap(image.filename, dtype=dtype, mode="r", offset=image.offset,
                         shape=tuple(sizes[axis] for axis in stored))  # fmt: skip
    return data.transpose(to_rows_cols_bands(interleave))


def _header_floats(metadata: Mapping[str, Any], key: str, source: Path) -> np.ndarray | None:
    if key not in metadata:
        return None
    try:
        return np.asarray([float(value) for value in _as_list(metadata[key])], dtype=np.float64)
    except ValueError as exc:
        raise SceneError(f"cannot parse the ENVI header field {key!r} as numbers ({exc})", source) from exc


def _good_bands(metadata: Mapping[str, Any], source: Path) -> np.ndarray | None:
    flags = _header_floats(metadata, "bbl", source)
    return None if flags is None else flags != 0


def _no_data_value(metadata: Mapping[str, Any], source: Path) -> float | None:
    values = _header_floats(metadata, "data ignore value", source)
    if values is None:
        return None
    if values.size != 1:
        raise SceneError(f"'data ignore value' must be one number, got {values.size}", source)
    return float(values[0])


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]
