"""Whether a cube's pixels read as spectra: the checks that catch a cube read in the wrong layout,
and 16-bit unsigned values read as signed.

A file read in the wrong interleave (an ENVI header with the wrong ``interleave`` or ``byte
order``; a ``.npy``, ``.mat`` or HDF5 cube stored bands-first but read as ``bip``) still gives a
cube of plausible size, and nothing fails: its "spectra" are runs of neighbouring pixels or of
another band, or byte-scrambled numbers. Real spectra are mixtures of a few smooth materials under
one illumination, so the spectra of a scene's pixels lie close to a 3-dimensional space; a
misread cube's do not (:func:`spectral_share`). The ENVI reader checks every image it opens
(:func:`edge_had.io.envi.misread_note`, which also tries the other byte order); the other formats
check the layout they were read in against the other interleaves (:func:`layout_note`).

A 16-bit camera's unsigned values labelled signed (ENVI ``data type = 2`` where 12 is meant)
read right up to 32767; brighter ones wrap to -32768 and up, and each such pixel is an extreme
anomaly. Signed measurements of good bands do not go that low - dark-subtracted data dips a few
counts below 0 (the ten ABU scenes' int16 cubes: -50 at the lowest) - so int16 samples below
:data:`INT16_IMPLAUSIBLE_BELOW`, other than the declared no-data value, are said
(:func:`int16_extremes`: a note for a scene, flag ``int16-extremes`` for a streamed line); an
undeclared fill value (-32768, -32767) is another cause, as harmful to RX, and a band that should
be marked bad a third (reflectance x 10000 in a water-vapour band, past what atmospheric
correction can hold, when the file has no ``bbl``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_had.io.raw import LAYOUTS, to_rows_cols_bands

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
#: at most this many good bands, evenly spaced, enter the check: a reading that makes the lines
#: of a 1500-line file its "bands" would otherwise gather 1500 of them per pixel and a 1500 x 1500
#: product (35 MiB for one such reading). Real sensors' spectra stay close to 3 components on a
#: subset of their bands; every band counts up to 256 (the ten scenes 188-207, the FX10 224).
SAMPLED_BANDS = 256


def spectral_share(
    cube: np.ndarray, good_bands: np.ndarray | None = None, no_data_value: float | None = None
) -> float | None:
    """How much a (rows, cols, bands) cube reads as spectra: the share of its sampled pixels'
    spectral energy in their 3 principal components, each pixel's spectrum less its mean and scaled
    to unit length (1: every spectrum a mix of 3 shapes; :data:`PLAUSIBLE_SHARE`). None (no
    verdict) for fewer than :data:`MIN_CHECKED_BANDS` good bands or :data:`MIN_CHECKED_PIXELS`
    valid pixels with some spectral variation. Reads at most 16 lines x 64 pixels x 256 bands
    (:data:`SAMPLED_LINES`, :data:`SAMPLED_RUNS`, :data:`SAMPLED_BANDS`), whatever the cube's size."""
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
    taken = np.flatnonzero(good)
    if taken.size > SAMPLED_BANDS:
        taken = taken[np.unique(np.linspace(0, taken.size - 1, SAMPLED_BANDS).astype(np.int64))]
    with np.errstate(invalid="ignore", over="ignore"):  # byte-swapped floats: signalling NaNs, 1e38s
        sampled = cube[np.ix_(lines, pixels, taken)]
        spectra = np.asarray(sampled, dtype=np.float64).reshape(-1, taken.size)
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


def layout_note(stored: np.ndarray, interleave: str, source: Path) -> str | None:
    """A note when the array ``stored`` of a ``.npy``, MATLAB or HDF5 file, read as ``interleave``
    (:data:`~edge_had.io.raw.LAYOUTS`), does not read as spectra but read in another interleave
    does: the file, the share of each reading and the ``--interleave`` to give. None when it reads
    as spectra, gives no verdict, or no other reading looks right either (a dark or noisy scene:
    blaming the layout would send the user the wrong way). Samples at most 16 lines x 64 pixels per
    reading (a memory-mapped ``.npy`` is not read whole)."""
    if stored.ndim != 3:
        return None
    share = spectral_share(stored.transpose(to_rows_cols_bands(interleave)))
    if share is None or share >= PLAUSIBLE_SHARE:
        return None
    plausible = []
    for other in LAYOUTS:
        if other != interleave:
            other_share = spectral_share(stored.transpose(to_rows_cols_bands(other)))
            if other_share is not None and other_share >= PLAUSIBLE_SHARE:
                plausible.append((other, other_share))
    if not plausible:
        return None
    readings = " or ".join(f"{layout} ({value:.3f}: --interleave {layout})" for layout, value in plausible)
    axes = ", ".join(LAYOUTS[interleave])
    return (
        f"{source} does not read as spectra as stored in {interleave} ({axes}; shape {stored.shape}): "
        f"its sampled pixels have {share:.3f} of their spectral energy in 3 components, real spectra "
        f">= {PLAUSIBLE_SHARE}; read as {readings} they do"
    )


#: int16 samples below this are no signed measurement (dark-subtracted counts dip a few below 0;
#: reflectance x 10000 would be -0.82): unsigned values of 32768 to 57343 read as signed, or a
#: fill value (module docstring). Brighter unsigned values, 57344 to 65535, read as -8192 to -1,
#: too close to real negatives to be told by their value alone; a bright object's other pixels
#: usually are in the range caught.
INT16_IMPLAUSIBLE_BELOW = -8192


def is_int16(dtype: np.dtype) -> bool:
    """Whether ``dtype`` is a 16-bit signed integer, in either byte order."""
    return dtype.kind == "i" and dtype.itemsize == 2


def int16_extremes(samples: np.ndarray, no_data_value: float | None = None) -> tuple[int, int]:
    """``(count, lowest)`` of the int16 ``samples`` below :data:`INT16_IMPLAUSIBLE_BELOW` other
    than ``no_data_value``; ``(0, 0)`` when there is none or the samples are not int16. One
    reduction over the samples when none is that low (the usual case)."""
    if not is_int16(samples.dtype) or samples.size == 0:
        return 0, 0
    if int(samples.min()) >= INT16_IMPLAUSIBLE_BELOW:
        return 0, 0
    low = samples < INT16_IMPLAUSIBLE_BELOW
    if no_data_value is not None:
        low &= samples != no_data_value
    count = int(low.sum())
    return count, int(samples[low].min()) if count else 0


def int16_extremes_note(count: int, lowest: int, envi: bool) -> str:
    """What :func:`int16_extremes` found, said for a scene (``envi``: read through an ENVI header,
    whose fields are then named): the likely causes and what to fix."""
    declared = ("an ENVI header's 'data type = 2' where the camera writes unsigned values: 12"
                if envi else "the array stored as int16 where the camera writes uint16")  # fmt: skip
    fill = "not declared ('data ignore value')" if envi else "not declared"
    return (
        f"{count} int16 samples below {INT16_IMPLAUSIBLE_BELOW} (down to {lowest}) in good bands: "
        f"unsigned 16-bit values read as signed ({declared}), a fill value {fill}, or a band "
        "that should be marked bad; such pixels score as extreme anomalies"
    )
