"""Training-free enhanced detection: a trained model enhances the background, RX scores it.

Per scene (METHOD.md, "Detection"): normalise the cube (the model's :class:`Normalization`),
resample it to the model's K canonical bands (:class:`SpectralAdapter`, on wavelengths when known),
run both branches, then

* ``fusion="feature"``: RX on ``x_k + alpha_spe * f_spe + alpha_spa * f_spa`` (enough bands);
* ``fusion="product"``: ``minmax(RX(x_k + alpha_spa * f_spa)) * minmax(RX(x_k + alpha_spe * f_spe))``.

Invalid pixels are replaced by the mean valid spectrum before the networks (their receptive
fields would spread NaN) and scored NaN. ``scorer`` picks what scores the fused cube
(:mod:`edge_had.detectors.scoring`): global RX (``enhanced-rx``), dual-window local RX
(``enhanced-lrx``) or their geometric mean (``enhanced-hybrid-rx``). Nothing is tuned per scene.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from edge_had.detectors import enhance_tiles, scoring
from edge_had.detectors.fusion import fuse_scores
from edge_had.detectors.lrx import LocalRXSettings

FUSIONS = ("feature", "product")


def impute_invalid(cube: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """A copy of the cube whose invalid pixels hold the mean valid spectrum (float32)."""
    cube = np.array(cube, dtype=np.float32, copy=True)
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)  # a 0/1 integer mask would index, not mask
        if not valid.all():
            cube[~valid] = cube[valid].mean(axis=0)
    return cube


class EnhancedDetector:
    """``enhanced-rx`` / ``-lrx`` / ``-hybrid-rx`` with a model bundle (default: the shipped one)."""

    NAMES = {"global": "enhanced-rx", "local": "enhanced-lrx", "hybrid": "enhanced-hybrid-rx"}

    def __init__(
        self,
        model: str | Path | None = None,
        fusion: str = "feature",
        scorer: str = "global",
        lrx: LocalRXSettings | None = None,
        *,
        backend: str = "auto",
        precision: str | None = "fp32",  # None: what the --onnx / --engine records, else fp32
        onnx: str | Path | None = None,
        engine: str | Path | None = None,
        device: str = "cpu",
        resample: str = "wavelength",
        regularization: float = 0.0,
    ) -> None:
        from edge_had.band_resampling import wavelengths_to_use
        from edge_had.models.bundle import load_bundle
        from edge_had.runtime import choose_backend
        from edge_had.runtime.select import passed_over_files

        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {fusion!r}; choose one of {FUSIONS}")
        wavelengths_to_use(resample, None)  # unknown choices: ValueError
        self.resample = resample
        self.lrx = lrx or LocalRXSettings()
        self.regularization = regularization  # global RX's loading (the local part's: lrx)
        self._score = scoring.scorer(scorer, self.lrx, regularization)  # unknown names: ValueError
        # at the scorer's alphas: hybrid RX's has no spatial branch (alpha_spa 0), so it is
        # neither run nor counted in macs_per_pixel, as in the stream
        self.bundle = load_bundle(model).for_scorer(scorer)
        self.fusion = fusion
        self.scorer = scorer
        self.name = self.NAMES[scorer]
        self._macs: dict[tuple[int, tuple[float, ...] | None], int] = {}
        self.artifacts: dict[str, Any] = {"onnx": onnx, "engine": engine, "device": device}
        self.requested_backend = backend
        self.backend = choose_backend(backend, precision, **self.artifacts)
        self._runners: dict[tuple[int, bytes], tuple[Any, Any]] = {}  # (runner, its BackendChoice)
        self.last_backend = self.backend
        #: backend -> why it could not run and `auto` went on without it (the CLI warns)
        self.fallbacks: dict[str, str] = passed_over_files(self.backend, **self.artifacts)

    def runner_for(self, bands: int, wavelengths: np.ndarray | None = None) -> Any:
        """The active runner for a sensor (one per band count and wavelength set, kept)."""
        from edge_had.runtime import BackendError, choose_backend, enhancement_runner

        key = (bands, b"" if wavelengths is None else np.asarray(wavelengths, np.float64).tobytes())
        failed: dict[str, str] = {}
        while key not in self._runners:
            try:
                runner = enhancement_runner(self.backend, self.bundle, bands, wavelengths, **self.artifacts)
                self._runners[key] = (runner.activate(), self.backend)
            except BackendError as error:
                # a corrupt or mismatched artifact: `auto` falls back to the next backend and
                # says so in the report; a backend asked for by name fails here
                if self.requested_backend != "auto":
                    raise
                failed[self.backend.backend] = f"failed to load: {error}"
                self.fallbacks[self.backend.backend] = str(error)
                self.backend = choose_backend(
                    "auto", self.backend.precision, exclude=failed, **self.artifacts
                )
        runner, self.last_backend = self._runners[key]  # what enhances this sensor's cubes (eval records it)
        return runner

    def macs_per_pixel(self, bands: int, wavelengths: np.ndarray | None = None) -> int:
        """Multiply-adds per pixel of the inference path for a sensor of ``bands`` bands resampled
        on ``wavelengths`` (None: on band index) - the adapter that runs: centres that give a
        canonical band more than 4 sensor bands (e.g. repeated centres) make it a dense product
        (a review: 53,658 for 450 bands with each centre three times, reported as 14,410 on band
        index) - one 1024-pixel line; see :func:`edge_had.models.budget.count_macs_per_pixel`."""
        key = (bands, None if wavelengths is None else tuple(np.asarray(wavelengths, dtype=float).ravel()))
        if key not in self._macs:
            from edge_had.models.budget import count_macs_per_pixel

            counted = count_macs_per_pixel(self.bundle.model_for(bands, wavelengths), bands, 1024)
            self._macs[key] = round(float(counted["total_macs_per_pixel"]))
        return self._macs[key]

    @property
    def training_scenes(self) -> dict[str, str] | None:
        """SHA-256 -> name of the model's training scenes (reports mark ``trained_on``); None when
        the model's folder records none (weights copied without train_config.json or sidecar.json:
        whether it saw a scene is unknown)."""
        return self.bundle.known_training_scenes

    @property
    def settings(self) -> dict[str, Any]:
        config = self.bundle.config
        settings: dict[str, Any] = {
            "fusion": self.fusion,
            "model": str(self.bundle.directory),
            "model_sha256": self.bundle.sha256,
            "k": config.k,
            "alpha_spe": config.alphas_for(self.scorer)[0],
            "alpha_spa": config.alphas_for(self.scorer)[1],
            "spatial_branch": config.spatial,
            "resample": self.resample,
            "normalization": dict(config.normalization),
            "backend": self.backend.to_dict(),
        }
        if self.scorer == "global":
            settings["regularization"] = self.regularization
        else:
            settings["lrx"] = asdict(self.lrx)
        return settings

    def enhance(
        self, cube: np.ndarray, valid: np.ndarray | None = None, wavelengths: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Unscaled ``x_k``, ``f_spe``, ``f_spa`` as (rows, cols, K) float32 arrays; resampled on
        ``wavelengths`` (nm) unless the detector resamples on band index."""
        from edge_had.band_resampling import wavelengths_to_use

        wavelengths = wavelengths_to_use(self.resample, wavelengths)
        runner = self.runner_for(cube.shape[2], wavelengths)
        try:
            return enhance_parts(self.bundle, cube, valid, wavelengths, runner)
        finally:  # not held through the scoring, nor until the next scene
            free_working_memory(runner)

    def detect(self, cube: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
        return self._score(cube, valid)

    def score(
        self, cube: np.ndarray, valid: np.ndarray | None = None, wavelengths: np.ndarray | None = None
    ) -> np.ndarray:
        alphas = self.bundle.config.alphas_for(self.scorer)
        if self.fusion == "feature":
            return self.detect(self.enhanced_cube(cube, valid, wavelengths, alphas), valid)
        parts = self.enhance(cube, valid, wavelengths)
        return fuse_parts(parts, *alphas, self.fusion, lambda x: self.detect(x, valid))

    def enhanced_cube(
        self,
        cube: np.ndarray,
        valid: np.ndarray | None,
        wavelengths: np.ndarray | None,
        alphas: tuple[float, float],
    ) -> np.ndarray:
        """The feature-fused float64 cube RX scores (:func:`enhanced_feature_cube`)."""
        from edge_had.band_resampling import wavelengths_to_use

        wavelengths = wavelengths_to_use(self.resample, wavelengths)
        runner = self.runner_for(cube.shape[2], wavelengths)
        try:
            return enhanced_feature_cube(self.bundle, cube, valid, wavelengths, runner, alphas)
        finally:  # not held through the scoring, nor until the next scene
            free_working_memory(runner)


def enhance_parts(
    bundle: Any,
    cube: np.ndarray,
    valid: np.ndarray | None = None,
    wavelengths: np.ndarray | None = None,
    runner: Any = None,
    *,
    tile_lines: int | None = None,
) -> dict[str, np.ndarray]:
    """Run a :class:`~edge_had.models.bundle.ModelBundle` on a (rows, cols, bands) cube: unscaled
    ``x_k``, ``f_spe`` and ``f_spa`` (zeros without a spatial branch), (rows, cols, K) float32 as
    the networks compute them (:func:`fuse_parts` sums them in float64).
    ``runner``: an active :class:`~edge_had.runtime.Runner` of the bundle for this sensor
    (default: torch FP32 on the CPU). Run in bands of ``tile_lines`` lines where the runner
    allows (:mod:`edge_had.detectors.enhance_tiles`), on the whole scene otherwise (and when the
    scene fits one band)."""
    if runner is None:
        from edge_had.runtime.torch_runner import TorchRunner

        with TorchRunner(bundle.model_for(cube.shape[2], wavelengths)) as default_runner:
            return enhance_parts(bundle, cube, valid, wavelengths, default_runner, tile_lines=tile_lines)
    networks = split_for(bundle, cube, runner, tile_lines)
    if networks is None:
        return enhance_whole_scene(bundle, cube, valid, runner)
    feed = enhance_tiles.SceneFeed(bundle, cube, valid)
    rows, cols = cube.shape[:2]
    parts = {name: np.empty((rows, cols, bundle.config.k), np.float32) for name in ("x_k", "f_spe")}
    for lines, outputs in enhance_tiles.line_bands(
        feed, networks.bands, bundle.spectral.receptive_radius, tile_lines
    ):
        for name, part in parts.items():
            part[lines] = outputs[name]
    if not enhance_tiles.has_spatial(bundle):
        parts["f_spa"] = np.zeros_like(parts["x_k"])
        return parts
    f_spa = networks.spatial(np.ascontiguousarray(parts["x_k"].transpose(2, 0, 1)[None]))
    parts["f_spa"] = np.ascontiguousarray(f_spa[0].transpose(1, 2, 0))
    return parts


def enhanced_feature_cube(
    bundle: Any,
    cube: np.ndarray,
    valid: np.ndarray | None,
    wavelengths: np.ndarray | None,
    runner: Any,
    alphas: tuple[float, float],
    *,
    tile_lines: int | None = None,
) -> np.ndarray:
    """``x_k + alpha_spe f_spe + alpha_spa f_spa`` in float64, the bits :func:`fuse_parts` sums
    from :func:`enhance_parts`, without the scene-sized parts. A first pass over the bands of lines
    runs the adapter alone (a per-pixel band resampling: cheap) for ``x_k``,
    kept bands first in the sum's own memory (float32: half its bytes) for the spatial student,
    which then runs once; a second pass writes the sum over it, band by band, as the adapter and
    spectral network give ``x_k`` and ``f_spe`` again. So ``x_k`` takes no memory beside the sum
    (134 MB next to 268 MB at 512 x 1024 x 64)."""
    (alpha_spe, alpha_spa), k = alphas, bundle.config.k
    networks = split_for(bundle, cube, runner, tile_lines)
    if networks is None:
        parts = enhance_whole_scene(bundle, cube, valid, runner)
        return weighted_sum(parts["x_k"], (alpha_spe, parts["f_spe"]), (alpha_spa, parts["f_spa"]))
    feed = enhance_tiles.SceneFeed(bundle, cube, valid)
    rows, cols = cube.shape[:2]
    # the adapter's pass runs the spectral network's bands of lines, halo included: the same
    # inputs, so the same x_k bits as the second pass's
    halo = bundle.spectral.receptive_radius
    total = np.empty((rows, cols, k), np.float64)
    f_spa = None
    if enhance_tiles.has_spatial(bundle):  # else f_spa is zeros: adding 0 * 0 changes no bit
        # an x_k of its own, freed after the spatial student, would stay in the process beside
        # the sum (freed memory is kept: edge_had.allocator); the sum's pages are reused instead
        x_k = total.reshape(-1).view(np.float32)[: total.size].reshape(1, k, rows, cols)
        for lines, outputs in enhance_tiles.line_bands(feed, networks.adapter, halo, tile_lines):
            x_k[0, :, lines] = outputs["x_k"].transpose(2, 0, 1)
        free_working_memory(runner)  # the adapter's intermediates
        f_spa = networks.spatial(x_k)[0]
        del x_k
        free_working_memory(runner)  # the spatial student's (its output stays)
    for lines, outputs in enhance_tiles.line_bands(feed, networks.bands, halo, tile_lines):
        terms = [(alpha_spe, outputs["f_spe"])]
        if f_spa is not None:
            terms.append((alpha_spa, f_spa[:, lines].transpose(1, 2, 0)))
        weighted_sum(outputs["x_k"], *terms, out=total[lines])
    return total


def free_working_memory(runner: Any) -> None:
    """Between two stages of a scene: the runner's pools, then the freed pages the process keeps
    (:func:`~edge_had.allocator.release_freed_memory`), so the next stage's arrays take their
    place instead of new pages."""
    from edge_had.allocator import release_freed_memory

    runner.free_working_memory()
    release_freed_memory()


def split_for(
    bundle: Any, cube: np.ndarray, runner: Any, tile_lines: int | None
) -> enhance_tiles.SplitNetworks | None:
    """The runner's networks run apart for a scene run in bands of lines, or None for one run
    whole: it fits one band (nothing to save; one run of the whole graph, no cut), or the runner
    cannot split the graph."""
    rows, cols = cube.shape[:2]
    if rows <= enhance_tiles.band_lines(cols, tile_lines):
        return None
    return enhance_tiles.split_networks(runner, bundle)


def enhance_whole_scene(
    bundle: Any, cube: np.ndarray, valid: np.ndarray | None, runner: Any
) -> dict[str, np.ndarray]:
    """:func:`enhance_parts` with the whole scene in one run of ``runner`` (the reference the
    bands of lines are checked against, and the path of runners that cannot split the graph)."""
    imputed = impute_invalid(cube, valid)  # a float32 copy of our own
    lo, hi = bundle.normalization.fit(imputed, valid)
    rows, cols, bands = imputed.shape
    feed = {"cube": np.empty((1, bands, rows, cols), dtype=np.float32)}
    feed["cube"][0] = imputed.transpose(2, 0, 1)  # bands first, as the networks take it
    del imputed  # one scene-sized copy at a time: it, then the feed normalised in place
    bundle.normalization.apply(feed["cube"], lo, hi, out=feed["cube"])
    wanted = ("x_k", "f_spe", "f_spa")  # not the fused output: the scorers fuse at their alphas
    outputs = runner.infer(feed, wanted)
    del feed
    return {name: np.ascontiguousarray(outputs.pop(name)[0].transpose(1, 2, 0)) for name in wanted}


def fuse_parts(
    parts: dict[str, np.ndarray],
    alpha_spe: float,
    alpha_spa: float,
    fusion: str,
    detect: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """Score enhanced parts: ``detect(x_k + a f_spe + b f_spa)`` (feature) or the product of the
    min-max normalised ``detect(x_k + b f_spa)`` and ``detect(x_k + a f_spe)`` (product); the
    sums in float64."""
    x_k, f_spe, f_spa = parts["x_k"], parts["f_spe"], parts["f_spa"]
    if fusion == "feature":
        return detect(weighted_sum(x_k, (alpha_spe, f_spe), (alpha_spa, f_spa)))
    if fusion == "product":
        return fuse_scores(
            [detect(weighted_sum(x_k, (alpha_spa, f_spa))), detect(weighted_sum(x_k, (alpha_spe, f_spe)))],
            "product",
        )
    raise ValueError(f"unknown fusion {fusion!r}; choose one of {FUSIONS}")


def weighted_sum(
    base: np.ndarray, *terms: tuple[float, np.ndarray], out: np.ndarray | None = None
) -> np.ndarray:
    """``base + a1 t1 + a2 t2 ...`` in float64, left to right - the same bits as on float64 copies
    of the parts, with one scene-sized temporary instead of a copy of each part and of each sum;
    into ``out`` (float64, the parts' shape) if given."""
    (first_weight, first), *rest = terms
    total = np.multiply(first, first_weight, out=out, dtype=np.float64)
    np.add(base, total, out=total, dtype=np.float64)  # base + a1 t1: addition commutes exactly
    for weight, term in rest:
        total += np.multiply(term, weight, dtype=np.float64)
    return total


class ResampledRXDetector:
    """Global (or hybrid) RX on the cube resampled to K canonical bands: the baseline every
    enhancement gain is measured against (the resampling alone changes RX's AUC; METHOD.md,
    "Measured leads")."""

    NAMES = {"global": "resampled-rx", "local": "resampled-lrx", "hybrid": "resampled-hybrid-rx"}

    def __init__(
        self,
        k: int = 64,
        scorer: str = "global",
        lrx: LocalRXSettings | None = None,
        resample: str = "wavelength",
        regularization: float = 0.0,
    ) -> None:
        from edge_had.band_resampling import wavelengths_to_use

        wavelengths_to_use(resample, None)  # unknown choices: ValueError
        self.resample = resample
        self.lrx = lrx or LocalRXSettings()  # the local part of local and hybrid RX
        self.regularization = regularization  # global RX's loading, as enhanced-rx's
        self._score = scoring.scorer(scorer, self.lrx, regularization)  # unknown names: ValueError
        self.k = k
        self.scorer = scorer
        self.name = self.NAMES[scorer]

    @property
    def settings(self) -> dict[str, Any]:
        if self.scorer == "global":
            return {"k": self.k, "resample": self.resample, "regularization": self.regularization}
        return {"k": self.k, "resample": self.resample, "lrx": asdict(self.lrx)}

    def score(
        self, cube: np.ndarray, valid: np.ndarray | None = None, wavelengths: np.ndarray | None = None
    ) -> np.ndarray:
        from edge_had.band_resampling import wavelengths_to_use
        from edge_had.models.adapter import SpectralAdapter

        wavelengths = wavelengths_to_use(self.resample, wavelengths)
        adapter = SpectralAdapter.for_sensor(cube.shape[2], wavelengths, self.k)
        resampled = np.asarray(cube, dtype=np.float64) @ adapter.matrix.T
        return self._score(resampled, valid)
