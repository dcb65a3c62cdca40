"""Band centres in nanometres, whatever unit a file gives them in.

A unit that is a length is converted (``NM_PER_UNIT``). Values without a unit (or "Unknown") that
are all below :data:`MICROMETRE_GUESS_BELOW` are taken for micrometres: imaging spectrometers cover
~0.35-14 um, i.e. 350-14000 nm. A unit that is not a length (wavenumber, GHz, band index) cannot
be resampled on as wavelengths: those values are dropped, and the spectral adapter resamples on
band index, as for a file without wavelengths.
"""

from __future__ import annotations

import numpy as np

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


def nm_factor(units: object, wavelengths: np.ndarray | None) -> float | None:
    """Factor from ``units`` (as the file writes it; None: not given) to nm; None when the unit is
    not a length (the values are then no wavelengths)."""
    key = None if units is None else str(units).strip().lower()
    if key in NM_PER_UNIT:
        return NM_PER_UNIT[key]
    if key in (None, "", "unknown"):
        guess = (
            wavelengths is not None and wavelengths.size and np.nanmax(wavelengths) < MICROMETRE_GUESS_BELOW
        )
        return 1e3 if guess else 1.0
    return None
