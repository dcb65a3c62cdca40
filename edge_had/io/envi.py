"""Read ENVI images (``.hdr`` header + raw data file, BIL/BIP/BSQ) through the ``spectral`` package.

The data file is memory-mapped (``numpy.memmap`` in its storage order, viewed as (lines, samples,
bands) = (rows, cols, bands)) in its stored dtype and byte order, whatever the file's interleave
(bsq, bil or bip, any case; spectral parses the header). From the header: ``wavelength`` and
``fwhm`` (converted to nm using ``wavelength units``, dropped when that unit is not a length:
:mod:`edge_had.io.units`), ``bbl`` (bad-band list -> ``good_bands``) and ``data ignore value``
(-> no-data value). A data file shorter than the header promises is reported as truncated, a
longer one as misdescribed.

A header with the wrong ``interleave`` or ``byte order`` still describes a file of the right size:
its samples are read scrambled, and nothing fails (BIL data labelled ``bip``: the FX10 reviewer's
AUC 1.0 -> 0.83, with "invalid px" as the only sign). So every image of :data:`MIN_CHECKED_BANDS`
bands or more is checked when it is opened (:func:`spectral_share`): real spectra are mixtures of
a few smooth materials under one illumination, so the spectra of its pixels lie close to a
3-dimensional space, while a misread cube's "spectra" are runs of neighbouring pixels or of
another band, or byte-scrambled numbers, which do not. A cube below :data:`PLAUSIBLE_SHARE` that
another reading of its bytes (interleave, byte order) lifts above it gets a note (``meta["notes"]``,
which ``detect`` and ``eval`` print and the reports carry) naming the file, the header fields to
check and that reading. Limits (a review): a dark or noisy file reads as no spectra in any layout,
so it gets no note (no reading to point to); and a raw, non-flat-fielded scene of one material
(a uniform field under cross-track vignetting) can read as spectra in the wrong layout too - BIL
labelled bip scored 0.961 there, its right reading 0.942 - so such a mislabel is not caught.
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

#: Below this share of the sampled pixels' spectral energy in 3 components (:func:`spectral_share`)
#: a cube does not read as spectra. Measured (2026-11-29, this sampling): read as stored, the ten
#: real ABU scenes (AVIRIS/ROSIS, int16/uint16, .mat: their bytes laid out in each interleave)
#: 0.996-0.999 and the reviewer's synthetic FX10 file (/tmp/fx: 224 bands, BIL, uint16, noise 8 DN)
#: 0.991; read wrongly - the same bytes in each of the other interleaves, byte-swapped, or taken as
#: float32 and swapped - at most 0.699 (abu-beach-2 byte-swapped; abu-airport-4 as another
#: interleave at most 0.683; the FX10 file labelled bip 0.342, bsq 0.634, byte order 1 0.506).
#: 0.85 sits 0.14 below the lowest right reading and 0.15 above the highest wrong one. (Adjacent
#: bands' correlation does not separate them: BIL read as bip puts neighbouring pixels of one band
#: in adjacent "bands", which correlate as strongly, 0.994 on the FX10 file, as its real adjacent
#: bands, 0.979.)
PLAUSIBLE_SHARE = 0.85
MIN_CHECKED_BANDS = 8  # fewer bands (a mask, a score image) are not checked
MIN_CHECKED_PIXELS = 16  # nor are fewer valid sampled pixels: no verdict
SAMPLED_LINES = 16  # lines sampled, evenly spaced
SAMPLED_RUNS = (4, 16)  # in each, 4 runs of 16 neighbouring pixels (a page or two of a BIL/BSQ line)


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
    """The memory-mapped cube and band metadata of an ENVI image; errors name ``source`` (default:
    header). ``meta["notes"]``: band centres dropped for their unit, a cube that does not read as
    spectra (:func:`misread_note`)."""
    source = header if source is None else source
    image = _open_image(header, data, source)
    metadata: Mapping[str, Any] = image.metadata
    interleave = _interleave(metadata, source)
    cube = _memmap(image, interleave, source)
    units = metadata.get("wavelength units")
    wavelengths, fwhm, note = band_centres_nm(
        _header_floats(metadata, "wavelength", source), _header_floats(metadata, "fwhm", source), units
    )
    good_bands = _good_bands(metadata, source)
    no_data_value = _no_data_value(metadata, source)
    byte_order = int(metadata.get("byte order", 0))
    misread = misread_note(image, header, (interleave, byte_order), good_bands, no_data_value)
    return RawScene(
        cube=cube,
        wavelengths=wavelengths,
        fwhm=fwhm,
        good_bands=good_bands,
        no_data_value=no_data_value,
        meta={
            "format": "envi",
            "dtype": str(np.dtype(image.dtype)),
            "interleave": interleave,
            "byte_order": "big" if byte_order == 1 else "little",
            "header": str(header),
            "data_file": str(image.filename),
            "wavelength_units": units,
            "notes": [text for text in (note, misread) if text is not None],
        },
    )


def spectral_share(
    cube: np.ndarray, good_bands: np.ndarray | None = None, no_data_value: float | None = None
) -> float | None:
    """How much a (rows, cols, bands) cube reads as spectra: the share of its sampled pixels'
    spectral energy in their 3 principal components, each pixel's spectrum less its mean and scaled
    to unit length (1: every spectrum a mix of 3 shapes; :data:`PLAUSIBLE_SHARE`). None (no
    verdict) for fewer than :data:`MIN_CHECKED_BANDS` good bands or :data:`MIN_CHECKED_PIXELS`
    valid pixels with some spectral variation. Reads at most 16 lines x 64 pixels
    (:data:`SAMPLED_LINES`, :data:`SAMPLED_RUNS`), whatever the cube's size."""
    rows, cols, bands = cube.shape
    good = np.ones(bands, dtype=bool) if good_bands is None else np.asarray(good_bands, dtype=bool)
    if good.shape != (bands,) or good.sum() < MIN_CHECKED_BANDS:
        return None
    runs, run = SAMPLED_RUNS
    lines = np.unique(np.linspace(0, rows - 1, min(rows, SAMPLED_LINES)).astype(np.int64))
    pixels = np.arange(cols)
    if cols > runs * run:
        starts = np.linspace(0, cols - run, runs).astype(np.int64)
        pixels = np.unique((starts[:, None] + np.arange(run)).ravel())
    with np.errstate(invalid="ignore", over="ignore"):  # byte-swapped floats: signalling NaNs, 1e38s
        spectra = np.asarray(cube[np.ix_(lines, pixels)], dtype=np.float64).reshape(-1, bands)[:, good]
        keep = np.isfinite(spectra).all(axis=1)
        if no_data_value is not None:
            keep &= ~(spectra == no_data_value).any(axis=1)
        spectra = spectra[keep]
        spectra -= spectra.mean(axis=1, keepdims=True)
        norms = np.sqrt((spectra * spectra).sum(axis=1))
    usable = np.isfinite(norms) & (norms > 0)
    if usable.sum() < MIN_CHECKED_PIXELS:
        return None
    spectra = spectra[usable] / norms[usable, None]
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):  # a small problem: threads only contend (seconds on a busy host)
        energy = np.linalg.eigvalsh(spectra.T @ spectra)[::-1]  # the squared singular values
    return float(energy[:3].sum() / energy.sum())


def misread_note(
    image: Any,
    header: Path,
    declared: tuple[str, int],
    good_bands: np.ndarray | None,
    no_data_value: float | None,
) -> str | None:
    """A note when the image read as its header says (``declared``: interleave, byte order) does
    not read as spectra (:func:`spectral_share` below :data:`PLAUSIBLE_SHARE`), naming the header
    fields to check and the other readings of its bytes that do look right; None when it reads as
    spectra, gives no verdict, or no other reading looks right either - a correctly labelled dark
    or noisy file (little light over the sensor noise: 0.57 at a tenth of an FX10's usual signal)
    reads as no spectra in any layout, and blaming its header would send the user the wrong way.
    Each reading samples its own memory map, closed after it: the
    pages it read (2 MiB folios, ~30 MiB of a 48 MiB file) do not stay in the process's memory, as
    they would in the map the cube is read from."""
    share = spectral_share(_reading(image, *declared), good_bands, no_data_value)
    if share is None or share >= PLAUSIBLE_SHARE:
        return None
    interleave, byte_order = declared
    orders = (0, 1) if np.dtype(image.dtype).itemsize > 1 else (byte_order,)
    plausible = []
    for other in ((layout, order) for layout in LAYOUTS for order in orders):
        if other != declared:
            other_share = spectral_share(_reading(image, *other), good_bands, no_data_value)
            if other_share is not None and other_share >= PLAUSIBLE_SHARE:
                plausible.append(f"{other[0]} with byte order {other[1]} ({other_share:.3f})")
    if not plausible:
        return None
    hint = f"; read as {' or as '.join(plausible)} they do"
    return (
        f"{image.filename} does not read as spectra - check `interleave` / `byte order` in the header "
        f"{header} ({interleave}, byte order {byte_order}): its sampled pixels have {share:.3f} of their "
        f"spectral energy in 3 components, real spectra >= {PLAUSIBLE_SHARE}{hint}"
    )


def _reading(image: Any, interleave: str, byte_order: int) -> np.ndarray:
    """The image's data file mapped as a (rows, cols, bands) cube stored in ``interleave`` with
    ``byte_order`` (0: little-endian, 1: big-endian), whatever its header says."""
    rows, cols, bands = image.shape
    sizes = {"rows": rows, "cols": cols, "bands": bands}
    dtype = np.dtype(image.dtype).newbyteorder("<" if byte_order == 0 else ">")
    data = np.memmap(image.filename, dtype=dtype, mode="r", offset=image.offset,
                     shape=tuple(sizes[axis] for axis in LAYOUTS[interleave]))  # fmt: skip
    return data.transpose(to_rows_cols_bands(interleave))


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
