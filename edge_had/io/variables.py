"""Pick the cube, the ground truth and the band vectors among the named arrays of a file.

MATLAB and HDF5 files hold several named arrays. The rules, shared by every such format:

* cube: the only 3-D numeric array, unless ``cube_var`` names it; stored (rows, cols, bands)
  unless ``interleave`` says otherwise (``bsq``: bands first, ``bil``: bands in the middle);
* ground truth: the only 2-D numeric array shaped like the cube's first two axes, unless
  ``gt_var`` names it; none is fine (the scene then has no ground truth). A 2-D array that fits
  the cube only turned around is an error, not a scene without ground truth: one that fits the
  pixel grid of the cube read in another order (``interleave``: a cube stored bands first or in
  the middle; a wavelength vector that fits only that way says the same), or (cols, rows) (a
  transposed map).
  Other 2-D arrays are left out with a note (``Selection.notes``);
* wavelengths / fwhm: an optional numeric vector of length ``bands`` whose name looks like
  "wavelength(s)" (``wl_nm``, ``band_centers``, ...) / "fwhm". A vector so named of another length
  is left out with a note (the bands are then resampled on band index).

Ambiguity (several candidates) is an error that lists the names, never a silent guess.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_had.errors import SceneError
from edge_had.io.raw import LAYOUTS, to_rows_cols_bands

WAVELENGTH_NAME = re.compile(r"wave|^wl(_|$)|^wvl|^lambda|band_?cent(er|re)", re.IGNORECASE)
FWHM_NAME = re.compile(r"fwhm|bandwidth", re.IGNORECASE)
_EXACT_WAVELENGTH = ("wavelength", "wavelengths")


@dataclass(frozen=True)
class Variable:
    """A named array of a file, described without reading its data."""

    name: str
    shape: tuple[int, ...]
    numeric: bool
    group: bool = False  # a MATLAB struct or an HDF5 group at the top level: no array of its own

    def describe(self) -> str:
        if self.group:
            return f"{self.name} (a struct or group: save its arrays as variables of their own)"
        dims = "x".join(str(n) for n in self.shape) or "scalar"
        return f"{self.name} ({dims}{'' if self.numeric else ', not numeric'})"


@dataclass(frozen=True)
class Selection:
    """Names of the variables to read; ``None`` where the file has no such array."""

    cube: str
    gt: str | None = None
    wavelengths: str | None = None
    fwhm: str | None = None
    notes: tuple[str, ...] = ()  # what the reader left out, for the user


def select_variables(
    variables: Sequence[Variable],
    path: Path,
    *,
    cube_var: str | None = None,
    gt_var: str | None = None,
    interleave: str = "bip",
) -> Selection:
    """Choose the cube, ground truth and band vectors (see the module docstring for the rules)."""
    stored = _cube(variables, path, cube_var)
    as_read = tuple(stored.shape[axis] for axis in to_rows_cols_bands(interleave))
    cube = Variable(stored.name, as_read, stored.numeric)
    rows, cols, bands = cube.shape
    if gt_var is not None:
        gt: Variable | None = named_variable(variables, gt_var, path)
    else:
        shaped = [v for v in variables if v.numeric and v.shape == (rows, cols)]
        gt = _only(shaped, path, "ground-truth", option="gt_var")
    unused = [  # 2-D arrays that fit no pixel grid of the cube's
        v
        for v in variables
        if v.numeric and len(v.shape) == 2 and min(v.shape) > 1 and v.shape != (rows, cols)
    ]
    wavelengths = band_vector(variables, bands, WAVELENGTH_NAME)
    if gt is None:
        _refuse_other_layouts(variables, unused, stored, interleave, wavelengths is not None, path)
        _refuse_turned_maps(unused, cube, path)
    fwhm = band_vector(variables, bands, FWHM_NAME)
    misfits = [
        f"vector {v.describe()} does not fit the cube's {bands} bands: not used as {role}"
        for role, found, pattern in (
            ("band centres (bands resampled on band index)", wavelengths, WAVELENGTH_NAME),
            ("band widths", fwhm, FWHM_NAME),
        )
        if found is None  # (then none of these fits: each has another length)
        for v in _named_vectors(variables, pattern)
    ]
    return Selection(
        cube=cube.name,
        gt=None if gt is None else gt.name,
        wavelengths=wavelengths,
        fwhm=fwhm,
        notes=tuple(
            f"2-D array {v.describe()} does not fit the cube's {rows}x{cols} pixels: not used as ground truth"
            for v in unused
        )
        + tuple(misfits),
    )


def _refuse_other_layouts(
    variables: Sequence[Variable],
    maps: Sequence[Variable],
    stored: Variable,
    interleave: str,
    wavelengths_fit: bool,
    path: Path,
) -> None:
    """A file without a fitting ground truth whose cube, read in another order, would fit one of
    its 2-D arrays (or, without fitting wavelengths, a wavelength vector): the cube is stored in
    that order. Said, not read scrambled without its ground truth (a bands-first cube read as
    rows x cols x bands was, and its anomalies were silently lost)."""
    for other in LAYOUTS:
        if other == interleave:
            continue
        rows, cols, bands = (stored.shape[axis] for axis in to_rows_cols_bands(other))
        fitting = [m.describe() for m in maps if m.shape == (rows, cols)]
        if not wavelengths_fit and (vector := band_vector(variables, bands, WAVELENGTH_NAME)) is not None:
            fitting.append(f"the wavelengths {vector} ({bands})")
        if fitting:
            order = " x ".join(LAYOUTS[other])
            verb = "fits" if len(fitting) == 1 else "fit"
            raise SceneError(
                f"the cube {stored.describe()} read as {interleave} gives no ground truth; it looks stored "
                f"{other} ({order}): {' and '.join(fitting)} {verb} it read that way. Read it as {other} "
                f"(--interleave {other} of the commands that read scenes; load_scene(..., "
                f"interleave='{other}')), or name the ground truth with gt_var=... if that is not it",
                path,
            )


def _refuse_turned_maps(maps: Sequence[Variable], cube: Variable, path: Path) -> None:
    """A file without a fitting ground truth whose 2-D array is the pixel grid transposed: said,
    not read as a scene without ground truth (its anomalies were silently lost)."""
    rows, cols, _ = cube.shape
    for candidate in maps:
        if candidate.shape == (cols, rows):
            raise SceneError(
                f"ground truth {candidate.describe()} is transposed against the cube's {rows}x{cols} "
                "pixels: save it as rows x cols (or name another with gt_var=...)",
                path,
            )


def _cube(variables: Sequence[Variable], path: Path, cube_var: str | None) -> Variable:
    if cube_var is None:
        cube = _only([v for v in variables if v.numeric and len(v.shape) == 3], path, "cube")
        if cube is None:
            raise SceneError(f"no cube found: no 3-D numeric array among {_listing(variables)}", path)
        return cube
    cube = named_variable(variables, cube_var, path)
    if len(cube.shape) != 3:
        raise SceneError(f"variable {cube.describe()} is not a 3-D cube (rows, cols, bands)", path)
    return cube


def select_mask(
    variables: Sequence[Variable],
    path: Path,
    *,
    var: str | None = None,
    shape: tuple[int, int] | None = None,
) -> str:
    """The name of the mask in a ground-truth file: ``var``, else its only 2-D numeric array
    (of ``shape`` when given, so a file may also hold the cube or band vectors)."""
    if var is not None:
        return named_variable(variables, var, path).name
    wanted = "2-D numeric array" + ("" if shape is None else f" of shape {shape[0]}x{shape[1]}")
    candidates = [v for v in variables if v.numeric and len(v.shape) == 2 and shape in (None, v.shape)]
    mask = _only(candidates, path, "mask", option="gt_var")
    if mask is None:
        raise SceneError(f"no {wanted} (ground-truth mask) among {_listing(variables)}", path)
    return mask.name


def named_variable(variables: Sequence[Variable], name: str, path: Path) -> Variable:
    """The variable called ``name``; it must exist and be numeric."""
    for variable in variables:
        if variable.name == name:
            if not variable.numeric:
                raise SceneError(f"variable {name!r} is not a numeric array", path)
            return variable
    raise SceneError(f"no variable {name!r}; the file holds {_listing(variables)}", path)


def band_vector(variables: Sequence[Variable], bands: int, pattern: re.Pattern[str]) -> str | None:
    """A numeric vector of length ``bands`` whose name matches ``pattern`` (exact names first)."""
    found = [v.name for v in _named_vectors(variables, pattern) if _vector_length(v.shape) == bands]
    found.sort(key=lambda name: (name.lower() not in _EXACT_WAVELENGTH, name))
    return found[0] if found else None


def _named_vectors(variables: Sequence[Variable], pattern: re.Pattern[str]) -> list[Variable]:
    """The numeric vectors (:func:`_vector_length`) whose name matches ``pattern``, of any length."""
    return [v for v in variables if v.numeric and pattern.search(v.name) and _vector_length(v.shape)]


def _vector_length(shape: tuple[int, ...]) -> int | None:
    """n for a (n,), (1, n) or (n, 1) shape with n >= 2 (MATLAB stores vectors as 2-D), else None."""
    n = max(shape, default=0)
    return n if n >= 2 and (shape == (n,) or sorted(shape) == [1, n]) else None


def _only(candidates: list[Variable], path: Path, role: str, option: str = "cube_var") -> Variable | None:
    """The single candidate, ``None`` when there is none, an error listing them when there are several."""
    if len(candidates) > 1:
        names = ", ".join(v.describe() for v in candidates)
        raise SceneError(f"several candidate {role} arrays: {names}; choose one with {option}=...", path)
    return candidates[0] if candidates else None


def _listing(variables: Sequence[Variable]) -> str:
    if not variables:
        return "no variables (the file is empty)"
    return "variables " + ", ".join(v.describe() for v in variables)
