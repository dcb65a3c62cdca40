"""The one in-memory convention for a hyperspectral scene.

``cube`` is (rows, cols, bands) float32, rows are along-track lines (the pushbroom direction).
``valid`` marks usable pixels: False where the file's no-data value, NaN or Inf - or, when a
saturation level is given, a value at or above it - occurs in any good band (:class:`PixelRule`:
RX needs a whole spectrum, so one bad band masks the whole pixel; ``masked`` counts them by
reason). ``good_bands`` marks bands kept for detection (False for bands in an ENVI ``bbl``
bad-band list). Invalid pixels stay in the cube (their values are not trusted) and are masked
by detectors and evaluation; they are never fatal. ``gt`` marks anomalies (True) in a ground-truth
map; ``labelled`` (None: every pixel) the pixels the map labels at all - a map may leave pixels
unlabelled (an ENVI map's ``data ignore value``, a masked entry of a ``numpy.ma`` array, a NaN): they are
scored but left out of every metric, as ``counted`` says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_had.errors import SceneError
from edge_had.io.plausibility import int16_extremes, int16_extremes_note, is_int16

_VALIDITY_ROWS = 64  # rows per block when the valid mask is computed

#: Why a pixel is masked, in the order a pixel with several of them is counted under the first:
#: a NaN/Inf in a good band, the file's no-data value in a good band, a good band at or above the
#: saturation level.
MASK_REASONS = ("non_finite", "no_data", "saturated")


@dataclass
class Scene:
    cube: np.ndarray
    valid: np.ndarray
    good_bands: np.ndarray
    name: str = "scene"
    gt: np.ndarray | None = None
    #: the pixels the ground truth labels (background or anomaly); None: all of them
    labelled: np.ndarray | None = None
    wavelengths: np.ndarray | None = None
    fwhm: np.ndarray | None = None
    source: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    #: the pixels masked, by reason (:data:`MASK_REASONS`, each pixel under its first reason)
    masked: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MASK_REASONS, 0))
    _good_cube: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(
        default=None, repr=False, compare=False
    )

    @property
    def shape(self) -> tuple[int, int, int]:
        rows, cols, bands = self.cube.shape
        return rows, cols, bands

    @property
    def bands(self) -> int:
        return int(self.cube.shape[2])

    @property
    def counted(self) -> np.ndarray:
        """The pixels a metric counts: valid and labelled by the ground truth."""
        return self.valid if self.labelled is None else self.valid & self.labelled

    @property
    def unlabelled_pixels(self) -> int:
        """How many pixels the ground truth leaves unlabelled (0 when it labels every pixel)."""
        return 0 if self.labelled is None else int((~self.labelled).sum())

    def unlabelled_detail(self) -> str:
        """Words for a message about too few labelled pixels: how many pixels the map leaves
        unlabelled and what the reader noted (an ENVI map's ignore value of 0, ...); "" when it
        labels every pixel."""
        if self.labelled is None:
            return ""
        notes = "".join(f"; {note}" for note in self.meta.get("notes", []))
        return f" (its ground-truth map leaves {self.unlabelled_pixels} pixels unlabelled{notes})"

    def detection_cube(self) -> np.ndarray:
        """The cube restricted to good bands, (rows, cols, good bands) float32: made once (each call
        copied the cube again, and detect and eval call it several times per scene)."""
        if bool(self.good_bands.all()):
            return self.cube
        cached = self._good_cube
        if cached is None or cached[0] is not self.cube or not np.array_equal(cached[1], self.good_bands):
            cached = (self.cube, self.good_bands.copy(), self.cube[:, :, self.good_bands])
            self._good_cube = cached
        return cached[2]

    def detection_wavelengths(self) -> np.ndarray | None:
        if self.wavelengths is None:
            return None
        return self.wavelengths[self.good_bands]


def make_scene(
    cube: np.ndarray,
    *,
    name: str = "scene",
    gt: np.ndarray | None = None,
    wavelengths: np.ndarray | None = None,
    fwhm: np.ndarray | None = None,
    good_bands: np.ndarray | None = None,
    no_data_value: float | None = None,
    saturation: float | None = None,
    valid: np.ndarray | None = None,
    source: str | Path | None = None,
    meta: dict[str, Any] | None = None,
) -> Scene:
    """Validate and normalise arrays into a :class:`Scene` (float32 cube, boolean masks).
    ``no_data_value`` and ``saturation`` (None: no level known) mask pixels as :class:`PixelRule`
    says; ``valid`` masks more (counted in no reason of ``Scene.masked``).

    ``gt``: a ground-truth map (nonzero: anomaly); a ``numpy.ma`` masked array leaves its masked
    pixels unlabelled (``Scene.labelled``), and so does a NaN in a float map (with a note).

    Raises :class:`SceneError` naming ``source`` for: values that are not real numbers, not 3-D,
    fewer than 2 bands, ground truth or mask of the wrong shape, a ground truth with Inf or
    non-numeric values among its labelled pixels or none labelled, fewer than 2 good bands, or no
    valid pixel.
    """
    path = None if source is None else Path(source)
    stored = np.asarray(cube)  # its own dtype: an integer no-data value is compared exactly
    good = check_cube(stored, good_bands, path)
    rows, cols, bands = stored.shape
    cube = np.ascontiguousarray(stored, dtype=np.float32)

    kept = cube if good.all() else cube[:, :, good]
    rule = PixelRule(good, no_data_value, saturation)
    ok = np.empty((rows, cols), dtype=bool)
    masked = dict.fromkeys(MASK_REASONS, 0)
    extremes, lowest = 0, 0  # int16 samples no signed measurement reaches (plausibility module)
    for start in range(0, rows, _VALIDITY_ROWS):  # in row blocks: no cube-sized boolean temporaries
        block = slice(start, start + _VALIDITY_ROWS)
        problems = rule.problems(stored[block], kept[block])
        ok[block] = rule.valid_from(problems, kept[block].shape[:-1])
        for reason, count in rule.counts(problems).items():
            masked[reason] += count
        if is_int16(stored.dtype):  # the good bands are taken (a copy) only then
            count, low = int16_extremes(rule.good_samples(stored[block]), no_data_value)
            extremes, lowest = extremes + count, min(lowest, low)
    if valid is not None:
        valid = np.asarray(valid)
        if valid.shape != (rows, cols):
            raise SceneError(f"validity mask shape {valid.shape} does not match cube {(rows, cols)}", path)
        ok &= valid.astype(bool)
    if not ok.any():
        raise no_valid_pixel_error(stored, rule, path)

    gt_mask, labelled = (None, None) if gt is None else ground_truth_mask(gt, (rows, cols), path)
    meta = dict(meta or {})
    if extremes:
        envi = meta.get("format") == "envi"
        meta["notes"] = [*meta.get("notes", []), int16_extremes_note(extremes, lowest, envi)]
    in_file = f"'{meta['gt_var']}'" if meta.get("gt_var") else ""  # a MATLAB/HDF5 file's map
    if gt is not None and (nan_note := nan_labels_note(gt, in_file)) is not None:
        meta["notes"] = [*meta.get("notes", []), nan_note]

    return Scene(
        cube=cube,
        valid=ok,
        good_bands=good,
        name=name,
        gt=gt_mask,
        labelled=labelled,
        wavelengths=band_vector(wavelengths, bands, "wavelength list", path),
        fwhm=band_vector(fwhm, bands, "fwhm list", path),
        source=path,
        meta=meta,
        masked=masked,
        _good_cube=None if good.all() else (cube, good.copy(), kept),
    )


def check_cube(cube: np.ndarray, good_bands: np.ndarray | None, path: Path | None) -> np.ndarray:
    """The good-band mask of a cube (rows, cols, bands) as stored (all True when ``good_bands`` is
    None), after checking what its shape and dtype alone tell: :class:`SceneError` naming ``path``
    for values that are not real numbers, not 3-D, no pixel, fewer than 2 bands, a bad-band list
    of another length or leaving fewer than 2 good bands. Reads no pixel (a memory map stays unread)."""
    if cube.dtype.kind not in "biuf":  # strings, objects; complex values would lose their imaginary part
        raise SceneError(f"the cube holds {cube.dtype} values, not real numbers", path)
    if cube.ndim != 3:
        raise SceneError(f"expected a 3-D cube (rows, cols, bands), got shape {cube.shape}", path)
    rows, cols, bands = cube.shape
    if rows < 1 or cols < 1:
        raise SceneError(f"cube has no pixels (shape {cube.shape})", path)
    if bands < 2:
        raise SceneError(f"cube has {bands} band(s); detection needs at least 2", path)
    if good_bands is None:
        return np.ones(bands, dtype=bool)
    good = np.asarray(good_bands).astype(bool).ravel()
    if good.shape != (bands,):
        raise SceneError(f"bad-band list has {good.size} entries for {bands} bands", path)
    if int(good.sum()) < 2:
        raise SceneError(f"only {int(good.sum())} good band(s) after the bad-band list", path)
    return good


@dataclass(frozen=True)
class PixelRule:
    """Which pixels are usable - one rule for ``Scene.valid``, a file streamed line by line and a
    live camera's lines (:class:`~edge_had.stream.pipeline.StreamPipeline`). ``good``: the
    bands kept (ENVI ``bbl``; None: all); a pixel is masked when a good band is NaN/Inf (in
    float32: a float64 beyond its range too), equals ``no_data_value`` or is at or above
    ``saturation`` (None: no such value). RX needs the whole spectrum, so one such band masks
    the whole pixel. ``stored`` holds pixels (..., bands) as the file or the camera stores them
    (an integer or float64 file is compared as stored: float32 merges large integers, and float64
    values next to the no-data value - which also matches as a float32 writer stored it),
    ``values`` the same pixels' good bands in float32."""

    good: np.ndarray | None = None
    no_data_value: float | None = None
    saturation: float | None = None
    #: how the good bands are taken: None (all), a slice when they are one run (a view, no copy:
    #: a bbl usually leaves out the noisy ends), else the mask (a copy)
    _selector: slice | np.ndarray | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        selector: slice | np.ndarray | None = None
        if self.good is not None and not np.all(self.good):
            kept = np.flatnonzero(self.good)
            selector = np.asarray(self.good, dtype=bool)
            if kept.size > 0 and kept[-1] - kept[0] + 1 == kept.size:  # one run
                selector = slice(int(kept[0]), int(kept[-1]) + 1)
        object.__setattr__(self, "_selector", selector)

    @property
    def checks_values(self) -> bool:
        """Whether the rule looks at more than NaN/Inf (a no-data value or a saturation level)."""
        return self.no_data_value is not None or self.saturation is not None

    def good_values(self, stored: np.ndarray) -> np.ndarray:
        """The good bands of ``stored`` (..., bands) in float32 (``stored`` itself, or a view of
        it, when it is that already: not to be written to)."""
        return np.asarray(self.good_samples(stored), dtype=np.float32)

    def good_samples(self, stored: np.ndarray) -> np.ndarray:
        """The good bands of ``stored`` (..., bands) as stored: a view when they are one run of
        bands (or all of them), else a copy."""
        return stored if self._selector is None else stored[..., self._selector]

    def problems(
        self,
        stored: np.ndarray,
        values: np.ndarray,
        non_finite: np.ndarray | None = None,
        samples: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """The (...,) maps of the pixels masked for each reason that can occur
        (:data:`MASK_REASONS`; a pixel in the map of its first reason only). ``non_finite``: the
        NaN/Inf map when the caller has it already; ``samples``: :meth:`good_samples` of
        ``stored``, when the caller has them already (not taken again)."""
        problems: dict[str, np.ndarray] = {}
        taken = non_finite
        if taken is None and stored.dtype.kind == "f":  # integers are finite in float32 too
            taken = ~np.isfinite(values).all(axis=-1)
        if taken is not None:
            problems["non_finite"] = taken
        # an integer or float64 file is compared as stored (float32 merges large integers, and
        # float64 values next to the no-data value), a float32 one in float32
        as_stored = stored.dtype.kind in "iu" or (stored.dtype.kind == "f" and stored.dtype.itemsize == 8)
        if not as_stored:
            samples = values
        elif samples is None:
            samples = self.good_samples(stored)
        for reason, level, hit in (
            ("no_data", self.no_data_value, np.equal),
            ("saturated", self.saturation, np.greater_equal),
        ):
            if level is None:
                continue
            found = hit(samples, level if as_stored else np.float32(level)).any(axis=-1)
            if reason == "no_data" and stored.dtype.kind == "f" and as_stored:
                # ... or the value as a float32 writer stored it: a header's -3.40282347e+38 is
                # float32's lowest, stored in float64 as -3.4028234663852886e+38 (another value
                # only when the header's is no float32: -9999 or 0 are compared once)
                if (as_float32 := float(np.float32(level))) != level:
                    found |= hit(samples, as_float32).any(axis=-1)
            problems[reason] = found if taken is None else found & ~taken
            taken = found if taken is None else taken | found
        return problems

    def valid(self, stored: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Which pixels (...,) are usable."""
        return self.valid_from(self.problems(stored, values), values.shape[:-1])

    @staticmethod
    def valid_from(problems: dict[str, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
        valid = np.ones(shape, dtype=bool)
        for found in problems.values():
            valid &= ~found
        return valid

    @staticmethod
    def counts(problems: dict[str, np.ndarray]) -> dict[str, int]:
        """Pixels masked for each of :data:`MASK_REASONS` (0 for a reason that cannot occur)."""
        return {reason: int(problems[reason].sum()) if reason in problems else 0 for reason in MASK_REASONS}


#: how a summary line names each of MASK_REASONS
_REASON_WORDS = {"non_finite": "NaN/Inf", "no_data": "no-data value", "saturated": "saturated"}


def masked_summary(masked: dict[str, int]) -> str:
    """A summary line's words for the pixels masked, by reason (``Scene.masked``,
    ``health.masked_pixels``): why pixels were lost, and that one band loses the whole pixel."""
    total = sum(masked.values())
    if total == 0:
        return "0 masked px"
    reasons = ", ".join(f"{_REASON_WORDS[name]} {masked[name]}" for name in MASK_REASONS if masked[name])
    return (
        f"{total} masked px ({reasons} in some good band; RX needs whole spectra, "
        "so one band masks the pixel)"
    )


def invalid_as_nan(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``values`` (..., bands), float, with each pixel that is not ``valid`` (:meth:`PixelRule.valid`,
    ``Scene.valid``) set to NaN throughout, in place: how a line of a scene is streamed (the
    stream masks such pixels). Returns ``values``."""
    values[~valid] = np.nan
    return values


def ground_truth_mask(
    gt: Any, pixels: tuple[int, int], path: Path | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """A ground-truth map of a cube of ``pixels`` (rows, cols) as ``(anomalies, labelled)``: the
    bool mask (nonzero: anomaly; False on unlabelled pixels) and :func:`labelled_pixels` (masked
    in a ``numpy.ma`` array, or NaN: unlabelled; None when it labels all). :class:`SceneError`
    naming ``path`` for another shape, labelled values that are not finite numbers (Inf), or no
    labelled pixel."""
    labels = np.asarray(gt)  # the values, masked ones too
    if labels.shape != pixels:
        raise SceneError(f"ground-truth shape {labels.shape} does not match cube {pixels}", path)
    labelled = labelled_pixels(gt)
    if labelled is not None:
        if not labelled.any():
            raise SceneError("the ground truth labels no pixel (every pixel is unlabelled)", path)
        labels = np.where(labelled, labels, 0)
    if labels.dtype.kind not in "biuf" or (labels.dtype.kind == "f" and not np.isfinite(labels).all()):
        raise SceneError(f"the ground truth ({labels.dtype}) holds values that are not finite numbers", path)
    return labels != 0, labelled


def labelled_pixels(gt: Any) -> np.ndarray | None:
    """The pixels a ground-truth map labels: None when it labels all of them, else the bool map
    of its entries that are neither masked (a ``numpy.ma`` masked array) nor NaN."""
    labels = np.asarray(gt)
    unlabelled = np.ma.getmaskarray(gt) if isinstance(gt, np.ma.MaskedArray) else None
    if labels.dtype.kind == "f" and (nan := np.isnan(labels)).any():
        unlabelled = nan if unlabelled is None else unlabelled | nan
    return None if unlabelled is None or not unlabelled.any() else ~unlabelled


def nan_labels_note(gt: Any, name: str = "") -> str | None:
    """A note when a ground-truth map (its file ``name``, if any) holds NaN where it is not
    masked: those pixels are taken as unlabelled (:func:`labelled_pixels`; a float map's way to
    leave pixels out), which is said."""
    labels = np.asarray(gt)
    if labels.dtype.kind != "f":
        return None
    nan = np.isnan(labels) & ~np.ma.getmaskarray(gt)
    if not nan.any():
        return None
    the_map = f"the ground-truth map {name}" if name else "the ground-truth map"
    return f"{int(nan.sum())} pixels of {the_map} are NaN: unlabelled, scored but left out of every metric"


def band_vector(values: np.ndarray | None, bands: int, what: str, path: Path | None) -> np.ndarray | None:
    """One float64 value per band (wavelengths, fwhm), or None; :class:`SceneError` for another length."""
    if values is None:
        return None
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.shape != (bands,):
        raise SceneError(f"{what} has {arr.size} entries for {bands} bands", path)
    return arr


def no_valid_pixel_error(stored: np.ndarray, rule: PixelRule, path: Path | None) -> SceneError:
    """The error for a cube (rows, cols, bands, as stored) with no valid pixel under ``rule``,
    naming the good bands that are unusable on every pixel (a pass over the cube in row blocks: a
    memory map is read once, in bounded memory)."""
    hint = _dead_bands(stored, rule)
    saturated = "" if rule.saturation is None else f", saturated (>= {rule.saturation:g})"
    return SceneError(f"no valid pixel (all pixels are NaN/Inf, no-data{saturated} or masked){hint}", path)


def _dead_bands(stored: np.ndarray, rule: PixelRule) -> str:
    """A hint naming the good bands that are NaN/Inf, no-data or saturated on every pixel: one
    such band invalidates every pixel, and marking it bad (ENVI ``bbl``), or leaving it out of a
    MATLAB/HDF5/``.npy`` cube (those formats carry no bad-band list), keeps the rest of the scene."""
    good = np.ones(stored.shape[-1], dtype=bool) if rule.good is None else rule.good
    bands = np.flatnonzero(good)
    dead = np.ones(bands.size, dtype=bool)
    per_band = PixelRule(None, rule.no_data_value, rule.saturation)  # each band as a one-band pixel
    for start in range(0, stored.shape[0], _VALIDITY_ROWS):  # row blocks: bounded temporaries
        samples = stored[start : start + _VALIDITY_ROWS][..., bands][..., None]
        unusable = ~per_band.valid(samples, per_band.good_values(samples))
        dead &= unusable.all(axis=(0, 1))
        if not dead.any():
            break
    if not dead.any():
        return ""
    listed = ", ".join(map(str, bands[dead][:10])) + (" ..." if dead.sum() > 10 else "")
    reasons = "NaN/Inf or no-data" if rule.saturation is None else "NaN/Inf, no-data or saturated"
    return (
        f"; {int(dead.sum())} band(s) are {reasons} on every pixel (0-based: {listed}): "
        "mark them bad (ENVI 'bbl'; a .mat, .h5 or .npy file has no bad-band list: leave them out of "
        "its cube) to keep the other bands"
    )
