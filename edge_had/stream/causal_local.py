"""Hybrid RX in the line loop: causal global RX times a dual-window local RX, ``sqrt(RX * LRX)``.

The offline detector (:mod:`edge_had.detectors.scoring`) needs the whole scene; in a stream:

* **global part**: :class:`~edge_had.stream.causal.CausalRX` unchanged (statistics of the lines
  so far, warm-up lines scored late);
* **local part**: the dual window (``outer`` x ``outer`` minus the ``inner`` guard, clipped at the
  first line and, when the stream ends, at the last) needs ``outer // 2`` lines *after* a line
  (7 by default): each line's hybrid score is released that many lines later (its look-ahead);
* **principal components**: offline LRX projects on the leading components of the whole scene;
  here they come from the causal statistics, recomputed every ``basis_every`` lines, so the basis
  follows the scene as the statistics do. A new basis is handed over without a pause: it is
  computed when a line arrives, each line from that one on is projected on it as it arrives
  (beside the current basis), and it scores from the first line whose whole window arrived after
  it, ``outer // 2`` lines later. Re-projecting the window's ``outer`` lines at once made every
  64th line 5-8x slower than the others (10 ms against 1.7 ms on the 2-core CPU, and the late
  lines of hybrid RX on the GPU). A basis now scores ``2 (outer // 2)`` lines later than when it
  was put in at once (14 by default), and the next one is computed only once it scores, so the
  basis changes every ``max(basis_every, outer)`` lines.

Where it runs: numpy by default; with ``local_math`` (``stream --rx-device cuda``:
:class:`edge_had.stream.cuda_line_math.CudaLocalMath`) the window sums and the per-pixel solve run
on the CUDA kernels in float64, the same algorithm, and a line with a singular window goes back to
numpy. The projection on the basis stays on the host either way.

Memory: the window's lines (``outer`` x width x K floats) and, per line, its components and their
two along-line box sums (``outer`` x width x (c + 2 (1 + c + c (c + 1) / 2)) floats; up to
``outer - 1`` lines more of them in the next basis during a hand-over); nothing grows with the
stream once the global warm-up is over (lines wait for it as in
:class:`CausalRX`; the pipeline rejects lines without a valid pixel).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple, Protocol

import numpy as np

from edge_had.detectors.lrx import LocalRXSettings, scores_from_window_sums, symmetric_pairs
from edge_had.detectors.scoring import geometric_mean
from edge_had.stream.causal import NUMPY_LINE_MATH, CausalRX, CausalSettings, LineMath


class _AlongLineBoxSums:
    """Sums over ``2 half + 1`` neighbouring pixels along a line, clipped at its ends, for each
    ``half``, of the ``(features, width)`` values written into :attr:`line`.

    Sums of runs of 1, 2, 4, 8, ... pixels each take one add of the shorter runs, and a box of any
    length is the runs of its length's binary digits: for the 15- and 5-pixel boxes 3 adds, then
    3 and 1 more, in buffers kept between lines (zeros stand beyond the line's ends). A cumulative
    sum and differences took 1.25x longer for the 66 features of a 1024-pixel line (numpy's
    accumulate is sequential) and drift with the width; these sums add at most 15 values."""

    def __init__(self, features: int, width: int, halves: tuple[int, ...]) -> None:
        self.width, self.halves, self._pad = width, halves, max(halves)
        padded = np.zeros((features, width + 2 * self._pad))
        self.line = padded[:, self._pad : self._pad + width]  # write a line's values here
        self._runs = {1: padded}  # run length -> sums of that many pixels, from each start
        while 2 * (run := max(self._runs)) <= 2 * self._pad + 1:
            self._runs[2 * run] = np.empty((features, padded.shape[1] - 2 * run + 1))

    def __call__(self) -> list[np.ndarray]:
        """The box sums of :attr:`line` for each half, ``(features, width)`` each (new arrays)."""
        for run in sorted(self._runs)[:-1]:
            shorter = self._runs[run]
            np.add(shorter[:, :-run], shorter[:, run:], out=self._runs[2 * run])
        boxes = []
        for half in self.halves:
            start, parts = self._pad - half, []
            for run in sorted(self._runs, reverse=True):
                if (2 * half + 1) & run:  # the next ``run`` pixels of this box
                    parts.append(self._runs[run][:, start : start + self.width])
                    start += run
            box = parts[0].copy()
            for part in parts[1:]:
                box += part
            boxes.append(box)
        return boxes


class LocalLineMath(Protocol):
    """Where the local part's per-line work runs instead of numpy (the CUDA kernel:
    :class:`edge_had.stream.cuda_line_math.CudaLocalMath`): the window's lines, in the current
    basis, are ``put`` once each; ``scores`` returns a line's local RX, or ``None`` to leave that
    line to numpy."""

    name: str
    max_dims: int

    def holds(self, position: int) -> bool: ...

    def forget(self) -> None: ...

    def put(
        self, positions: list[int], y: np.ndarray, valid: np.ndarray, *, slots: int, inner: int, outer: int
    ) -> None:
        """Keep the lines at consecutive ``positions`` (``y`` ``(lines, c, width)``, ``valid``
        ``(lines, width)``; ``slots`` lines are kept; ``inner`` and ``outer``: the guard's and the
        window's half-widths)."""
        ...

    def scores(
        self, centre: int, top: int, bottom: int, valid: np.ndarray, *, fallback: np.ndarray, load: float
    ) -> np.ndarray | None: ...


class _LineFeatures(NamedTuple):
    """One line's ``[valid, y, y_i y_j (i <= j)]`` in one principal basis (``y``: its
    projection, :meth:`CausalHybridRX._projection`), summed along the line over the outer and the
    inner window's width (component-first, ``(1 + c + c (c + 1) / 2, width)``). Box sums are
    linear, so summing these over the window's lines gives the window sums. ``peak``: each
    feature's largest magnitude over the line's pixels (:class:`_RowWindow` reads it)."""

    outer: np.ndarray
    inner: np.ndarray
    peak: np.ndarray


class _Basis:
    """One principal basis of the causal statistics - ``mean``, leading eigenvectors ``vectors``
    ``(bands, c)`` and their ``eigenvalues`` - and the window's lines in it: their projections,
    their :class:`_LineFeatures` and the running window sums (numpy's path). ``first``: the first
    position it scores."""

    def __init__(
        self, mean: np.ndarray, vectors: np.ndarray, eigenvalues: np.ndarray, first: int, generation: int = 0
    ) -> None:
        self.mean, self.vectors, self.eigenvalues, self.first = mean, vectors, eigenvalues, first
        self.generation = generation  # of the statistics it came from (CausalHybridRX._generation)
        self.projections: dict[int, np.ndarray] = {}  # position -> y (CausalHybridRX._projection)
        self.features: dict[int, _LineFeatures] = {}  # position -> features (CausalHybridRX._features)
        self.outer, self.inner = _RowWindow("outer"), _RowWindow("inner")

    def forget(self, position: int) -> None:
        self.projections.pop(position, None)
        self.features.pop(position, None)


class CausalHybridRX:
    """Streaming hybrid RX with :class:`CausalRX`'s interface: ``push(line, valid)`` returns the
    lines whose scores became available as ``(position, scores, late)``; ``flush()`` at the end."""

    def __init__(
        self,
        bands: int,
        settings: CausalSettings | None = None,
        local: LocalRXSettings | None = None,
        *,
        basis_every: int = 64,
        line_math: LineMath = NUMPY_LINE_MATH,
        local_math: LocalLineMath | None = None,
    ) -> None:
        if basis_every < 1:
            raise ValueError(f"basis_every must be >= 1, got {basis_every}")
        self.bands = bands
        self.global_rx = CausalRX(bands, settings, line_math)
        self.settings = self.global_rx.settings
        self.local = local or LocalRXSettings()
        self.basis_every = basis_every
        components = self.local.n_components
        self.components = bands if components is None or components >= bands else components
        self.look_ahead_lines = self.local.outer // 2
        # the local part on a device when one is given and the basis fits its kernel
        fits = local_math is not None and self.components <= local_math.max_dims
        self.local_math = local_math if fits else None
        if self.local_math is not None:
            self.local_math.forget()  # positions start again at 0: what it holds is another stream's
        self._lines: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # position -> (line, valid)
        self._pairs = symmetric_pairs(self.components)
        self._box_sums: _AlongLineBoxSums | None = None  # made at the first line (its width)
        self._global: dict[int, tuple[np.ndarray, bool]] = {}  # global RX waiting for its local part
        self._pushed = 0
        self._next = 0  # the next position to release
        self._basis: _Basis | None = None  # the basis lines are scored in now
        self._next_basis: _Basis | None = None  # the one handed over to (see the module's doc)
        self._basis_age = 0  # lines pushed since the latest basis was computed
        self._stale = False  # the basis in use is from statistics replaced since (_generation)

    @property
    def refreshes(self) -> int:
        return self.global_rx.refreshes

    @property
    def restarts(self) -> int:
        return self.global_rx.restarts

    @property
    def restarts_undone(self) -> int:
        return self.global_rx.restarts_undone

    @property
    def screened(self) -> list[tuple[int, int, bool]]:
        """The global statistics' outlier gate in the latest push (:class:`CausalRX`)."""
        return self.global_rx.screened

    def push(self, line: np.ndarray, valid: np.ndarray | None = None) -> list[tuple[int, np.ndarray, bool]]:
        line = np.asarray(line, dtype=np.float64)
        valid = np.ones(line.shape[0], dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
        position = self._pushed
        self._lines[position] = (line, valid)
        self._pushed += 1
        self._basis_age += 1
        self._keep(self.global_rx.push(line, valid))
        generation = self._generation()
        if self._next_basis is not None and self._next_basis.generation != generation:
            self._next_basis = None  # from statistics replaced since (a restart, or its undo)
        self._stale = self._basis is not None and self._basis.generation != generation
        self._hand_over(position)
        return self._release(final=False)

    def flush(self) -> list[tuple[int, np.ndarray, bool]]:
        """End of stream: the last lines are scored with windows clipped at the last line."""
        self._keep(self.global_rx.flush())
        return self._release(final=True)

    def _keep(self, scored: list[tuple[int, np.ndarray, bool]]) -> None:
        for position, scores, late in scored:
            self._global[position] = (scores, late)

    def _release(self, final: bool) -> list[tuple[int, np.ndarray, bool]]:
        out = []
        half = self.look_ahead_lines
        while self._next in self._global and (final or self._next + half < self._pushed):
            position = self._next
            global_scores, late = self._global.pop(position)
            out.append((position, geometric_mean(global_scores, self._local_scores(position)), late))
            self._next += 1
            for old in [p for p in self._lines if p < self._next - half - 1]:  # left every window
                del self._lines[old]
                for basis in (self._basis, self._next_basis):
                    if basis is not None:
                        basis.forget(old)
        return out

    def _hand_over(self, position: int) -> None:
        """Once the basis is ``basis_every`` lines old, compute the next one from the statistics
        so far; until it scores, each new line (from ``position`` on) is projected on it too, as
        it arrives (numpy's path: with its along-line sums; a device: the projection, put there
        in one batch when the basis changes)."""
        due = self._basis_age >= self.basis_every or self._stale
        if self._next_basis is None and self._basis is not None and due:
            self._next_basis = self._new_basis(first=position + self.look_ahead_lines)
        if self._next_basis is not None:
            if self.local_math is None:
                self._features(self._next_basis, position)
            else:
                self._projection(self._next_basis, position)

    def _local_scores(self, position: int) -> np.ndarray:
        """Dual-window RX of the line at ``position`` with the lines around it that exist."""
        basis = self._basis_for(position)
        last = self._pushed - 1
        c = self.components
        outer, inner = self.local.outer // 2, self.local.inner // 2
        if self.local_math is not None:
            top, bottom = max(position - outer, 0), min(position + outer, last)
            scores = self._device_scores(basis, position, top, bottom)
            if scores is not None:
                return scores
            # numpy scores this line alone: its running windows did not follow the device's lines
            # (they may still hold lines released since), so they start again here
            basis.outer.reset()
            basis.inner.reset()
        features = partial(self._features, basis)
        basis.outer.move_to(max(position - outer, 0), min(position + outer, last), features)
        basis.inner.move_to(max(position - inner, 0), min(position + inner, last), features)
        summed = basis.outer.total - basis.inner.total
        window_sums = {"n": summed[0], "x": summed[1 : 1 + c], "xx": summed[1 + c :]}
        _, valid = self._lines[position]
        return scores_from_window_sums(
            self._projection(basis, position),
            valid,
            window_sums,
            np.zeros(c),
            np.diag(basis.eigenvalues),
            self.local.regularization,
        )

    def _device_scores(self, basis: _Basis, position: int, top: int, bottom: int) -> np.ndarray | None:
        """The local RX of ``position`` on :attr:`local_math` (the same window and loading as
        numpy's), or ``None`` when it leaves the line to numpy."""
        assert self.local_math is not None
        missing = [p for p in range(top, bottom + 1) if not self.local_math.holds(p)]
        if missing:  # one line a call, or the whole window after a basis change: one batch
            assert missing == list(range(missing[0], missing[-1] + 1))  # a window moves forward
            ys = self._projections_of(basis, missing)
            valids = np.stack([self._lines[p][1] for p in missing])
            halves = {"inner": self.local.inner // 2, "outer": self.local.outer // 2}
            self.local_math.put(missing, ys, valids, slots=self.local.outer, **halves)
        _, valid = self._lines[position]
        load = self.local.regularization * float(basis.eigenvalues.sum()) / self.components
        scores = self.local_math.scores(position, top, bottom, valid, fallback=basis.eigenvalues, load=load)
        if scores is not None:
            scores[~valid] = np.nan
        return scores

    def _basis_for(self, position: int) -> _Basis:
        """The basis that scores ``position``: the first one is computed here, when the first
        line is released; later ones take over at their ``first`` position (:meth:`_hand_over`)."""
        if self._basis is None:
            self._basis = self._new_basis(first=position)
        elif self._next_basis is not None and position >= self._next_basis.first:
            self._basis, self._next_basis = self._next_basis, None
            if self.local_math is not None:
                self.local_math.forget()  # it held the window in the old basis
        return self._basis

    def _new_basis(self, first: int) -> _Basis:
        """Mean, leading eigenvectors and their eigenvalues of the causal statistics now."""
        statistics = self.global_rx.statistics
        assert statistics is not None  # lines are released only after the warm-up
        mean, cov = statistics.mean_and_covariance()
        values, vectors = np.linalg.eigh(cov)
        order = np.argsort(values)[::-1][: self.components]
        self._basis_age = 0
        return _Basis(mean, vectors[:, order], np.maximum(values[order], 0.0), first, self._generation())

    def _generation(self) -> int:
        """How many times the global statistics were replaced wholesale (restarts and undone
        restarts): a basis from another generation is handed over at once, and one still queued
        is dropped (a restart's basis must not take over after the restart is undone)."""
        return self.global_rx.restarts + self.global_rx.restarts_undone

    def _projection(self, basis: _Basis, position: int) -> np.ndarray:
        """The line at ``position`` in ``basis``, ``(c, width)``, zero where not valid; cached."""
        if position not in basis.projections:
            self._project(basis, [position])
        return basis.projections[position]

    def _projections_of(self, basis: _Basis, positions: list[int]) -> np.ndarray:
        """:meth:`_projection` of several lines, ``(lines, c, width)``."""
        self._project(basis, [p for p in positions if p not in basis.projections])
        return np.stack([basis.projections[p] for p in positions])

    def _project(self, basis: _Basis, positions: list[int]) -> None:
        """Project these lines on ``basis`` into its cache, in one 2-D product (BLAS; a stacked
        3-D matmul took 6x longer for one line)."""
        if not positions:
            return
        lines = [self._lines[p][0] for p in positions]
        pixels = (lines[0] if len(lines) == 1 else np.concatenate(lines)) - basis.mean  # (n width, bands)
        projected = (basis.vectors.T @ pixels.T).reshape(basis.vectors.shape[1], len(positions), -1)
        for i, p in enumerate(positions):
            basis.projections[p] = np.where(self._lines[p][1], projected[:, i], 0.0)

    def _features(self, basis: _Basis, position: int) -> _LineFeatures:
        """The line at ``position`` in ``basis`` (:class:`_LineFeatures`); cached."""
        if position not in basis.features:
            _, valid = self._lines[position]
            y = self._projection(basis, position)
            halves = (self.local.outer // 2, self.local.inner // 2)
            if self._box_sums is None or self._box_sums.width != len(valid):
                self._box_sums = _AlongLineBoxSums(1 + len(y) + len(self._pairs[0]), len(valid), halves)
            per_pixel = self._box_sums.line  # [valid, y, y_i y_j (i <= j)]
            per_pixel[0] = valid
            per_pixel[1 : 1 + len(y)] = y
            np.multiply(y[self._pairs[0]], y[self._pairs[1]], out=per_pixel[1 + len(y) :])
            peak = np.maximum(per_pixel.max(axis=1), -per_pixel.min(axis=1))
            outer, inner = self._box_sums()
            basis.features[position] = _LineFeatures(outer, inner, peak)
        return basis.features[position]


#: A line leaving a window with a feature this many times larger than in every line staying has
#: the window summed afresh (:class:`_RowWindow`).
RESUM_RATIO = 1e3


class _RowWindow:
    """Sum of the lines' ``part`` features (``"outer"`` or ``"inner"``, :class:`_LineFeatures`)
    over a contiguous range of lines ``[low, high]``, moved by adding and removing lines at its
    ends (restarted when the basis changes).

    A running sum keeps a rounding residue of ~1e-16 times each value that passed through it: one
    corrupt 1e10 sample left residues larger than the window's own sums, and later lines scored up
    to 16x off for the rest of the basis (a review). So when a line leaves whose features were
    more than :data:`RESUM_RATIO` times larger than in every line staying, the window is summed
    afresh from its lines. The peaks cost ~3 % of a hybrid line (1024 x 32); summing every
    window afresh cost 1.5x."""

    def __init__(self, part: str) -> None:
        self.part = part
        self.reset()

    def reset(self) -> None:
        self.low, self.high = 0, -1  # empty
        self.total: Any = 0.0

    def move_to(self, low: int, high: int, features: Callable[[int], _LineFeatures]) -> None:
        # in place once the total is an array (0.0 + the first line's features makes a new one)
        if low > self.high or high < self.low:  # no overlap: start again
            self.reset()
            self.low, self.high = low, low - 1
        left = []  # the lines leaving
        while self.low < low:
            left.append(features(self.low))
            self.total -= getattr(left[-1], self.part)
            self.low += 1
        while self.low > low:
            self.low -= 1
            self.total += getattr(features(self.low), self.part)
        while self.high < high:
            self.high += 1
            self.total += getattr(features(self.high), self.part)
        while self.high > high:
            left.append(features(self.high))
            self.total -= getattr(left[-1], self.part)
            self.high -= 1
        if left:
            staying = np.max([features(p).peak for p in range(low, high + 1)], axis=0)
            if (np.max([line.peak for line in left], axis=0) > RESUM_RATIO * staying).any():
                self.reset()
                self.move_to(low, high, features)  # afresh: no line leaves this time
