"""Band centres in nanometres, whatever unit a file gives them in.

A unit that is a length is converted (``NM_PER_UNIT``). A wavenumber (cm^-1, as thermal and FTIR
instruments write them) is converted exactly: nm = 1e7 / wavenumber (the bands then run from long
to short wavelengths, which the adapter takes as they come), its fwhm through the derivative,
1e7 x fwhm / wavenumber^2. Values without a unit (or "Unknown") that are all below
:data:`MICROMETRE_GUESS_BELOW` are taken for micrometres: imaging spectrometers cover ~0.35-14 um,
i.e. 350-14000 nm (a note says so). Any other unit (GHz, band index), or centres that a unit
puts beyond :data:`LONGEST_PLAUSIBLE_NM` (nm values labelled micrometres), gives no wavelengths:
they are dropped, with a note saying so (``Scene.meta["notes"]``), and the spectral adapter
resamples on band index, as for a file without wavelengths.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from edge_had.band_resampling import WavelengthRangeError
from edge_had.errors import SceneError

NM_PER_UNIT = {
    "nanometers": 1.0,
    "nanometer": 1.0,
    "nanometres": 1.0,
    "nanometre": 1.0,
    "nm": 1.0,
    "micrometers": 1e3,
    "micrometer": 1e3,
    "micrometres": 1e3,
    "micrometre": 1e3,
    "microns": 1e3,
    "micron": 1e3,
    "um": 1e3,
    "µm": 1e3,  # micro sign U+00B5
    "μm": 1e3,  # Greek mu U+03BC
    "millimeters": 1e6,
    "millimetres": 1e6,
    "mm": 1e6,
    "centimeters": 1e7,
    "centimetres": 1e7,
    "cm": 1e7,
    "meters": 1e9,
    "metres": 1e9,
    "m": 1e9,
    "angstroms": 0.1,
    "angstrom": 0.1,
}
MICROMETRE_GUESS_BELOW = 30.0
#: Band centres beyond this many nm once converted are no imaging spectrometer's (thermal ones
#: end near 14,000 nm): the unit is wrong (a review: 400-1000 labelled Micrometers were taken as
#: 400,000-1,000,000 nm without a word, and plain RX resampled on them).
LONGEST_PLAUSIBLE_NM = 100_000.0


WAVENUMBER_UNITS = frozenset(
    {"wavenumber", "wavenumbers", "cm-1", "cm^-1", "cm**-1", "1/cm", "cm⁻¹", "inverse centimeters",
     "inverse centimetres", "reciprocal centimeters", "reciprocal centimetres"}
)  # fmt: skip


def unit_text(units: object) -> str | None:
    """A unit as text: HDF5 attributes come as bytes or as 1-element arrays of them."""
    if isinstance(units, np.ndarray) and units.size == 1:
        units = units.ravel()[0]
    if isinstance(units, (bytes, np.bytes_)):
        units = units.decode(errors="replace")
    return None if units is None else str(units)


def nm_factor(units: object, wavelengths: np.ndarray | None) -> float | None:
    """Factor from ``units`` (as the file writes it; None: not given) to nm; None when the unit is
    not a length (a wavenumber included: see :func:`band_centres_nm`)."""
    text = unit_text(units)
    key = None if text is None else text.strip().lower()
    if key in NM_PER_UNIT:
        return NM_PER_UNIT[key]
    if key in (None, "", "unknown"):
        guess = (
            wavelengths is not None and wavelengths.size and np.nanmax(wavelengths) < MICROMETRE_GUESS_BELOW
        )
        return 1e3 if guess else 1.0
    return None


def band_centres_nm(
    wavelengths: np.ndarray | None, fwhm: np.ndarray | None, units: object
) -> tuple[np.ndarray | None, np.ndarray | None, str | None]:
    """Band centres and widths in nm from the file's values in ``units``, and a note when the
    values had to be dropped - a unit that is no length, centres beyond
    :data:`LONGEST_PLAUSIBLE_NM` once converted - or were guessed to be micrometres (None
    otherwise)."""
    text = unit_text(units)
    if wavelengths is not None and (placeholder := _placeholder(wavelengths)) is not None:
        return None, None, f"band centres {placeholder}: no wavelengths (band index used)"
    if text is not None and text.strip().lower() in WAVENUMBER_UNITS:
        if wavelengths is None:
            return None, None, None
        if not (np.isfinite(wavelengths).all() and (wavelengths > 0).all()):
            return None, None, f"band centres in {text} that are not all positive: ignored (band index used)"
        return 1e7 / wavelengths, None if fwhm is None else 1e7 * fwhm / wavelengths**2, None
    factor = nm_factor(text, wavelengths)
    if factor is None:
        note = None
        if wavelengths is not None:
            note = f"band centres in {text!r}, which is no length or wavenumber: ignored (band index used)"
        return None, None, note
    if wavelengths is None:
        return None, None if fwhm is None else fwhm * factor, None
    written = f"{np.nanmin(wavelengths):g}-{np.nanmax(wavelengths):g}"
    centres = wavelengths * factor
    converted = f"{np.nanmin(centres):g}-{np.nanmax(centres):g} nm"
    if np.nanmax(centres) > LONGEST_PLAUSIBLE_NM:
        return (
            None,
            None,
            (
                f"band centres {written} in {text!r} would be {converted}, beyond any imaging "
                "spectrometer's: check the file's wavelength unit - ignored (band index used)"
            ),
        )
    note = None
    if factor == 1e3 and (text is None or text.strip().lower() in ("", "unknown")):
        note = f"band centres {written} without a unit: read as micrometres ({converted})"
    return centres, None if fwhm is None else fwhm * factor, note


def _placeholder(values: np.ndarray) -> str | None:
    """How band centres that are no wavelengths look, as writers fill the field when they have
    none (all one value, e.g. zeros; the band numbers 0..B-1 or 1..B); None for real ones."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size < 2:
        return None
    if np.all(values == values[0]):
        return f"all {values[0]:g}"
    numbers = np.arange(values.size, dtype=np.float64)
    if np.array_equal(values, numbers) or np.array_equal(values, numbers + 1):
        return f"are the band numbers {values[0]:g}..{values[-1]:g}"
    return None


@contextmanager
def naming_the_file(
    source: str | Path | None,
    meta: Mapping[str, Any],
    doing: str,
    instead: str | None = None,
) -> Iterator[None]:
    """Re-raise a :class:`~edge_had.band_resampling.WavelengthRangeError` of the block (band
    centres a resampling cannot take) as a :class:`~edge_had.errors.SceneError` naming ``source``,
    the file they came from (``meta``: its reader's), and what failed (``doing``, e.g. "cannot
    score with enhanced-rx"); for band centres that look like micrometres, with the unit the file
    gives them and where to fix it - an ENVI header's ``wavelength units``, a container's
    ``wavelength_units`` attribute - or resample on band index. ``instead``: the command's own
    alternative where it has no ``--resample`` (export: ``--bands`` without ``--wavelengths``),
    said in place of the fixes the error names; None: those, and ``--resample band-index``."""
    try:
        yield
    except WavelengthRangeError as error:
        if not error.micrometres:
            fix = str(error) if instead is None else f"{error.problem}: {instead}"
            raise SceneError(f"{doing}: {fix}", source) from error
        units = meta.get("wavelength_units")
        if meta.get("format") == "list":  # numbers alone (export --wavelengths x.txt): no unit field to fix
            said, where = "a list of band centres is read in nm", "its numbers (x 1000)"
        elif meta.get("format") == "envi":
            said = f"the header says `wavelength units = {units}`" if units else "the header gives no unit"
            where = f"`wavelength units` in {meta.get('header', source)} (to Micrometers)"
        else:
            said = f"the file gives their unit as {units!r}" if units else "the file gives no unit"
            where = (
                "the unit the file gives them (`wavelength_units`, or the wavelength dataset's `units`) "
                "(to Micrometers)"
            )
        raise SceneError(
            f"{doing}: {error.problem}, but {said}: fix {where}, or "
            + (instead or "resample on band index (--resample band-index)"),
            source,
        ) from error
