"""Offline enhancement in bands of lines: memory that grows with the tile, not with the scene.

Run on a whole scene at once, the exported graph (adapter + spectral network + spatial student)
needs a bands-first normalised copy of the cube beside it and every intermediate at full
resolution: 2.2 GB for a 235 MB int16 cube of 512 x 1024 x 224 (bench/test_bench_memory.py), most
of it the feed (0.47 GB) and ONNX Runtime's intermediates (0.8 GB). This module gives the same
numbers from bands of lines:

* **Scene-wide quantities first.** The normalisation's ``lo``/``hi`` (percentiles over the valid
  pixels) and the mean valid spectrum that fills invalid pixels are computed once, over the whole
  cube, exactly as :func:`~edge_had.detectors.enhanced.enhance_parts` computes them; each band of
  lines is then imputed and normalised with them.
* **Adapter and spectral network per band of lines.** Both are convolutions with per-layer
  padding and no scene-wide statistic: the adapter is 1x1, the spectral network reaches
  ``receptive_radius`` lines (one per 3x3 layer). A band of lines run with that many extra lines
  on each side (clipped at the scene's edges, where the graph pads as on the whole scene) gives
  the whole-scene ``x_k`` and ``f_spe`` for its own lines; the halo lines' outputs are dropped.
* **Spatial student once, on the whole ``x_k``.** It pools over the whole image (pyramid pooling,
  the squeeze-excitation gate's global mean), so no band of lines gives its output. It is run on
  the assembled full-resolution ``x_k`` alone: the torch runner's ``spatial`` module, or for ONNX
  Runtime the graph's own ``x_k -> f_spa`` subgraph, cut out of the same graph (same nodes, same
  weights; the deployed single graph is not changed). Its full-resolution part is one 1x1 conv
  to 8 channels, so this costs ``x_k`` and ``f_spa`` (2 x 134 MB at 512 x 1024 x 64), not the graph.

Checked (tests/test_enhance_tiles.py) against the whole-scene run of the same runner: ONNX
Runtime gives the same bits; torch on the CPU agrees to float32 round-off. A runner that cannot
run the spatial student on its own (TensorRT engines, whose optimisation profiles also bound the
lines per run; INT8 graphs) keeps the whole-scene path (:func:`spatial_branch` returns None).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

#: pixels per band of lines (its own lines; the halo comes on top): 32 lines of 1024 pixels, a
#: 29 MB feed at 224 bands. Its halo (3 + 3 lines for the shipped model) is recomputed, ~19 %
#: more network work than one whole-scene run at this size.
TILE_PIXELS = 32 * 1024

SpatialBranch = Callable[[np.ndarray], np.ndarray]


def has_spatial(bundle: Any) -> bool:
    """Whether the bundle's inference graph runs a spatial student (not at ``alpha_spa = 0``,
    :meth:`~edge_had.models.bundle.ModelBundle.model_for`)."""
    return bundle.spatial is not None and bundle.config.alpha_spa != 0


def spatial_branch(runner: Any, bundle: Any) -> SpatialBranch | None:
    """``f_spa`` from a bands-first ``(1, K, rows, cols)`` float32 ``x_k`` with the runner's own
    network, or None when the runner cannot run it apart from the rest (then the scene runs whole).
    A bundle without a spatial student gives zeros, as its graph does."""
    from edge_had.runtime.onnxruntime_runner import OnnxRuntimeRunner
    from edge_had.runtime.torch_runner import TorchRunner

    if isinstance(runner, TorchRunner):
        if not has_spatial(bundle):
            return np.zeros_like
        return _torch_spatial(runner)
    if isinstance(runner, OnnxRuntimeRunner) and runner.precision in ("fp32", "fp16"):
        if not has_spatial(bundle):
            return np.zeros_like
        return _onnxruntime_spatial(runner)
    return None


def _torch_spatial(runner: Any) -> SpatialBranch:
    def run(x_k: np.ndarray) -> np.ndarray:
        import torch

        device = runner.device
        with torch.no_grad():
            tensor = torch.from_numpy(x_k).to(device)
            if runner.precision == "fp32":
                f_spa = runner.model.spatial(tensor)
            else:  # as run_on_device runs the networks at fp16
                with torch.autocast("cuda", dtype=torch.float16):
                    f_spa = runner.model.spatial(tensor)
            return f_spa.float().cpu().numpy()

    return run


def _onnxruntime_spatial(runner: Any) -> SpatialBranch | None:
    """The graph's ``x_k -> f_spa`` subgraph in a session of its own, or None when the graph
    does not cut there (``f_spa`` reads something other than ``x_k`` and weights)."""
    import onnx

    from edge_had.runtime.onnxruntime_runner import OnnxRuntimeRunner

    try:
        graph = onnx.load_model_from_string(runner.graph)
        cut = onnx.utils.Extractor(graph).extract_model(["x_k"], ["f_spa"])
    except Exception:  # noqa: BLE001 - onnx raises assorted types; any of them: run whole
        return None
    if [value.name for value in cut.graph.input] != ["x_k"]:
        return None
    spatial = OnnxRuntimeRunner(
        runner.path, runner.precision, runner.providers, runner.threads, graph=cut.SerializeToString()
    )

    def run(x_k: np.ndarray) -> np.ndarray:
        with spatial:  # its intermediates go with the session
            return spatial.infer({"x_k": x_k}, ["f_spa"])["f_spa"]

    return run


class SceneFeed:
    """The graph's input for any band of lines of one scene, imputed and normalised with the
    whole scene's fill spectrum and ``lo``/``hi`` (as ``enhance_parts`` does on the whole cube)."""

    def __init__(self, bundle: Any, cube: np.ndarray, valid: np.ndarray | None) -> None:
        # float32 first, as impute_invalid makes it: the percentiles are those of float32 values
        self.cube = np.asarray(cube, dtype=np.float32)
        self.invalid = None
        self.fill = None
        if valid is not None:
            valid = np.asarray(valid, dtype=bool)  # a 0/1 integer mask would index, not mask
            if not valid.all():
                self.invalid = ~valid
                self.fill = self.cube[valid].mean(axis=0)  # the copy goes before fit makes its own
        self.normalization = bundle.normalization
        # the imputed pixels are not among the valid ones fit reads, so the cube gives its lo/hi
        self.lo, self.hi = self.normalization.fit(self.cube, valid)

    def lines(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """``{"cube": (1, bands, stop - start, cols)}`` float32 for lines ``start:stop``."""
        block = self.cube[start:stop]
        feed = np.empty((1, block.shape[2], stop - start, block.shape[1]), dtype=np.float32)
        feed[0] = block.transpose(2, 0, 1)
        if self.invalid is not None:
            invalid = self.invalid[start:stop]
            feed[0][:, invalid] = self.fill[:, None]
        self.normalization.apply(feed, self.lo, self.hi, out=feed)
        return {"cube": feed}


def line_bands(
    feed: SceneFeed, runner: Any, halo: int, wanted: tuple[str, ...], tile_lines: int | None = None
) -> Iterator[tuple[slice, dict[str, np.ndarray]]]:
    """``(lines, outputs)`` per band of lines: the outputs named in ``wanted`` for those lines as
    ``(lines, cols, K)`` float32, computed with ``halo`` lines of context on each side."""
    rows, cols = feed.cube.shape[:2]
    step = tile_lines or max(1, TILE_PIXELS // max(cols, 1))
    for start in range(0, rows, step):
        stop = min(start + step, rows)
        first, last = max(0, start - halo), min(rows, stop + halo)
        outputs = runner.infer(feed.lines(first, last), wanted)
        own = slice(start - first, stop - first)
        yield (
            slice(start, stop),
            {name: outputs[name][0][:, own].transpose(1, 2, 0) for name in wanted},
        )
