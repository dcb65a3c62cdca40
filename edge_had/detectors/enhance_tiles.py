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
  Only these two run per band: the torch runner's ``adapter`` and ``spectral`` modules, or for
  ONNX Runtime the graph's ``cube -> x_k, f_spe`` subgraph (ONNX Runtime runs every node of a
  graph whatever outputs are asked for, so the whole graph would run the spatial student on
  every band too, for an output that is dropped).
* **Spatial student once, on the whole ``x_k``.** It pools over the whole image (pyramid pooling,
  the squeeze-excitation gate's global mean), so no band of lines gives its output. It is run on
  the assembled full-resolution ``x_k`` alone: the torch runner's ``spatial`` module, or for ONNX
  Runtime the graph's own ``x_k -> f_spa`` subgraph, cut out of the same graph (same nodes, same
  weights; the deployed single graph is not changed). Its full-resolution part is one 1x1 conv
  to 8 channels, so this costs ``x_k`` and ``f_spa`` (2 x 134 MB at 512 x 1024 x 64), not the graph.
  For the fused cube (:func:`~edge_had.detectors.enhanced.enhanced_feature_cube`) ``x_k`` comes
  from a first pass of the adapter alone (the torch runner's ``adapter`` module, ONNX Runtime's
  ``cube -> x_k`` subgraph: the same nodes on the same bands of lines, so the same bits as the
  second pass's), so that it is not held beside the float64 sum.
  ONNX Runtime's subgraphs are cut once per runner and kept
  (:meth:`~edge_had.runtime.onnxruntime_runner.OnnxRuntimeRunner.part`), not per scene.

A scene that fits one band (no more lines than :func:`band_lines`; the ten ABU scenes) runs
whole, in one run of the whole graph: there is nothing to save, and no subgraph is cut or run.

Checked (tests/test_enhance_tiles.py) against the whole-scene run of the same runner: ONNX
Runtime gives the same bits; torch on the CPU agrees to float32 round-off. A runner that cannot
run the networks apart (TensorRT engines, whose optimisation profiles also bound the lines per
run; INT8 graphs) keeps the whole-scene path (:func:`split_networks` returns None).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np

#: pixels per band of lines (its own lines; the halo comes on top): 32 lines of 1024 pixels, a
#: 29 MB feed at 224 bands, for both backends. The halo (3 + 3 lines for the shipped model) is
#: recomputed: 6/32 = 19 % more adapter + spectral work, which is 82 % of the graph's multiply-
#: adds (the spatial student runs once), so ~15 % more network work than one whole-scene run.
#: On the 2-core CPU it costs no time (256 x 1024 x 100, the enhancement alone; bench/README.md,
#: "Networks apart"): ONNX Runtime 0.77 s in bands vs 0.82 s whole; torch 0.46-0.51 s in bands
#: of 32 lines, 0.52-0.54 s of 64, 0.69-0.71 s of 128, 0.53-0.56 s whole (small bands stay in
#: cache), with peaks of 0.86, 0.94, 1.04 and 1.1-1.3 GB: 32 lines for torch too.
TILE_PIXELS = 32 * 1024

Networks = Callable[[np.ndarray], dict[str, np.ndarray]]
SpatialBranch = Callable[[np.ndarray], np.ndarray]


class SplitNetworks(NamedTuple):
    """A runner's networks run apart: ``bands`` gives ``{"x_k", "f_spe"}`` as ``(1, K, lines,
    cols)`` float32 from a ``(1, bands, lines, cols)`` normalised cube (adapter and spectral
    network only), ``adapter`` the same ``{"x_k"}`` alone; ``spatial`` gives ``f_spa`` from the
    assembled ``(1, K, rows, cols)`` ``x_k``. Without a spatial student (:func:`has_spatial`)
    ``spatial`` gives zeros and ``adapter`` is not to be called (ONNX Runtime's is not cut)."""

    bands: Networks
    adapter: Networks
    spatial: SpatialBranch


def has_spatial(bundle: Any) -> bool:
    """Whether the bundle's inference graph runs a spatial student (not at ``alpha_spa = 0``,
    :meth:`~edge_had.models.bundle.ModelBundle.model_for`)."""
    return bundle.spatial is not None and bundle.config.alpha_spa != 0


def band_lines(cols: int, tile_lines: int | None = None) -> int:
    """Lines per band (its own, without the halo): ``tile_lines`` or :data:`TILE_PIXELS` worth.
    A scene of no more lines runs whole (one run of the whole graph: nothing to cut)."""
    return tile_lines or max(1, TILE_PIXELS // max(cols, 1))


def split_networks(runner: Any, bundle: Any) -> SplitNetworks | None:
    """The runner's networks run apart (:class:`SplitNetworks`), or None when the runner cannot
    run them apart from the rest (then the scene runs whole). A bundle without a spatial student
    gives zeros for ``f_spa``, as its graph does."""
    from edge_had.runtime.onnxruntime_runner import OnnxRuntimeRunner
    from edge_had.runtime.torch_runner import TorchRunner

    spatial = has_spatial(bundle)
    if isinstance(runner, TorchRunner):
        spatial_branch = runner.infer_spatial if spatial else np.zeros_like
        return SplitNetworks(runner.infer_spectral, runner.infer_adapter, spatial_branch)
    if isinstance(runner, OnnxRuntimeRunner) and runner.precision in ("fp32", "fp16"):
        return _onnxruntime_split(runner, spatial)
    return None


def _onnxruntime_split(runner: Any, spatial: bool) -> SplitNetworks | None:
    """The graph's ``cube -> x_k, f_spe``, ``cube -> x_k`` and ``x_k -> f_spa`` subgraphs, cut once per runner
    (:meth:`~edge_had.runtime.onnxruntime_runner.OnnxRuntimeRunner.part`); None when the graph
    does not cut there. The whole graph would run the spatial student on every band (ONNX
    Runtime runs every node whatever outputs are asked for) only for its output to be dropped."""
    cuts = {
        "bands": (("cube",), ("x_k", "f_spe")),
        "adapter": (("cube",), ("x_k",)),
        "spatial": (("x_k",), ("f_spa",)),
    }
    if not spatial:  # nor is x_k needed alone
        del cuts["spatial"], cuts["adapter"]
    if any(runner.part(*cut) is None for cut in cuts.values()):
        return None

    def run(cut: str, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return runner.part(*cuts[cut]).activate().infer(feed, cuts[cut][1])

    return SplitNetworks(
        lambda cube: run("bands", {"cube": cube}),
        lambda cube: run("adapter", {"cube": cube}),
        (lambda x_k: run("spatial", {"x_k": x_k})["f_spa"]) if spatial else np.zeros_like,
    )


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
            assert self.fill is not None  # set with the invalid pixels
            invalid = self.invalid[start:stop]
            feed[0][:, invalid] = self.fill[:, None]
        self.normalization.apply(feed, self.lo, self.hi, out=feed)
        return {"cube": feed}


def line_bands(
    feed: SceneFeed, networks: Networks, halo: int, tile_lines: int | None = None
) -> Iterator[tuple[slice, dict[str, np.ndarray]]]:
    """``(lines, outputs)`` per band of lines: ``networks``' outputs for those lines as
    ``(lines, cols, K)`` float32 (``x_k`` and ``f_spe`` from :attr:`SplitNetworks.bands`, ``x_k``
    from :attr:`SplitNetworks.adapter`), computed with ``halo`` lines of context on each side."""
    rows, cols = feed.cube.shape[:2]
    step = band_lines(cols, tile_lines)
    for start in range(0, rows, step):
        stop = min(start + step, rows)
        first, last = max(0, start - halo), min(rows, stop + halo)
        outputs = networks(feed.lines(first, last)["cube"])
        own = slice(start - first, stop - first)
        yield slice(start, stop), {name: part[0][:, own].transpose(1, 2, 0) for name, part in outputs.items()}
