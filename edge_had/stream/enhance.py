"""The enhancement model in the line loop: blocks of lines through a runner, in order.

Lines are collected until ``block`` new lines plus ``context`` look-ahead lines are buffered;
then the model runs on the window ``[first - context, last + context]`` (``block + 2 context``
lines, 22 by default: the spectral branch's 7 x 7 receptive field needs 3 lines each side) and the
``block`` new lines are emitted as enhanced ``(width, K)`` lines, ``x_k + alpha_spe f_spe +
alpha_spa f_spa``. The spatial student runs on the same window: it is a low-frequency field, and
refreshing it once per block is the refresh interval of the edge budget (there it saw a 64-line
buffer; here the window - a documented simplification). At the start and the end of the stream
the missing context repeats the first (last) line, as the model's convolutions pad the scene's
borders by replication (it was zeros, far from any data: a review found the first three lines'
mean RX 178 instead of 109 on abu-urban-1). A whole scene pushed as one block with
``context=0`` equals offline enhancement (a test); with context the first and last lines are
close to offline, not equal: the model replicates at every layer, the stream once at its input.

**Normalisation** cannot see the whole image in a stream: its ``lo``/``hi`` are fitted on the first
``fit_lines`` lines (held back until then) and kept - unless the data leaves them: when most of a
line lies beyond ``REFIT_BOUND`` (50) normalised units (250x the fitted range, where the networks'
input clip at 100 begins to bite; the ten ABU scenes stay under 1.5 and never refit, either scan
direction) for ``REFIT_LINES`` (4) lines in a row, ``lo``/``hi`` are fitted again on those lines
(:attr:`StreamEnhancer.refits`). A burst of corrupt lines looks the same, so a refit is on probation
for ``REFIT_PROBATION`` (64) lines: a line that fits the replaced ``lo``/``hi`` again brings them
back (:attr:`StreamEnhancer.refits_undone`; a 12-line x1e6 burst had fixed the normalisation on
itself for good, AUC 0.52 after it against 0.99). A stream that starts on an exact dark frame fitted
its normalisation on it for good: abu-urban-1 (a training scene of the shipped model used here:
a robustness check, not an accuracy figure) behind 16 zero lines scored 0.887 (0.951 from its 40th
line on) against 0.998 from a clean start; with the refit 0.937 (0.998 from line 40; the rest is the
lines scored before the RX statistics restart; a synthetic stream in 16-bit counts: 0.61 frozen,
0.94 refitted, 0.979 clean, from its 60th line). Noisy dark starts (values up to ~190) scored as
well without a refit as with one at a lower bound, so they keep their fit. The check reads every
16th pixel of a line. **Latency**: a line waits for the
rest of its block and the look-ahead: up to ``block - 1 + context`` line periods.

**Asynchronous** (``asynchronous=True``): a full block goes to one worker thread and ``push``
returns at once; its lines come out of a later ``push`` (the first after the run finished) or of
``flush``, still in order. Meanwhile the caller scores the previous block, so the network (on a
GPU, or ONNX Runtime's threads, which release the GIL) overlaps RX on the CPU. Two windows take
turns (no copy of the block): when a block is full and the other window is still being read by
the previous run, ``push`` waits for that run only, and the new one keeps running. A line may
wait one block longer: ``look_ahead_lines`` adds ``block``. Runners may be called from any thread
(:mod:`edge_had.runtime`; TensorRT's makes its CUDA context current per call).

On a CPU-only machine the network's threads and RX compete for the same cores: with ONNX Runtime
on one core fewer than the machine has (:func:`runner_threads_beside_rx`), the overlap is real
(measured on 2 cores, FX10 shape: 1.3x the synchronous loop with global RX, bench/README.md).

**Failures**: a run's error is raised (as :class:`EnhancementError`, the cause attached) by the
call that collects it, the worker stops, and every later call raises again: an enhancer does not
go on with a half-filled state (the pipeline then falls back to plain RX). A failed warm-up breaks
it the same way, so such a stream is plain RX from its first line. ``push`` after
``flush`` is an error too.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from edge_had.errors import EdgeHadError

ENHANCED = ("enhanced",)  # the one output the loop uses: the others stay on the device
#: |normalised value| beyond which most of a line means the fitted lo/hi no longer fit the data
#: (the module docstring: 5 also refitted noisy dark starts, which scored as well without)
REFIT_BOUND = 50.0
#: consecutive such lines before lo/hi are fitted again
REFIT_LINES = 4
#: lines after a refit in which a line that fits the replaced lo/hi again brings them back: a burst
#: of corrupt lines refits like a dark start ends, and fixed lo/hi on the burst for good (a review)
REFIT_PROBATION = 64


def runner_threads_beside_rx() -> int:
    """CPU threads for an asynchronous enhancement runner: one core is left for RX."""
    import os

    return max(1, (os.cpu_count() or 2) - 1)


class EnhancementError(EdgeHadError, RuntimeError):
    """The enhancement network failed in the line loop (or the enhancer was used after that)."""


class StreamEnhancer:
    """See the module docstring. Lines are written once, transposed, into a preallocated window
    ``(bands, context + block + context, width)`` - the network's input layout - so a block run
    copies nothing; after a run the last ``2 context`` lines move to the front."""

    def __init__(
        self,
        bundle: Any,
        runner: Any,
        *,
        block: int = 16,
        context: int = 3,
        fit_lines: int = 16,
        asynchronous: bool = False,
    ) -> None:
        if block < 1 or context < 0 or fit_lines < 1:
            raise ValueError("block and fit_lines must be >= 1, context >= 0")
        self.bundle, self.runner = bundle, runner
        self.block, self.context, self.fit_lines = block, context, fit_lines
        self.lo_hi: tuple[float, float] | None = None
        self._unfitted: list[tuple[np.ndarray, np.ndarray]] = []
        self._windows: list[np.ndarray] = []  # (bands, 2 context + block, width); two when asynchronous
        self._current = 0  # the window being filled
        self._fill = context  # rows in use; the first `context` rows are the zero padding at the start
        self._valid: list[np.ndarray] = []  # validity of the lines not yet submitted, in order
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="enhance") if asynchronous else None
        self._in_flight: deque[tuple[Future, list[np.ndarray], int]] = deque()  # run, validity, window
        self._broken: str | None = None  # why the enhancer cannot be used any more
        # the consecutive lines mostly beyond the fitted normalisation (lo/hi are fitted on them)
        self._beyond_range: list[tuple[np.ndarray, np.ndarray]] = []
        self._before_refit: tuple[float, float] | None = None  # the fit a refit on probation replaced
        self._probation = 0
        self.blocks_run = 0
        self.refits = 0
        self.refits_undone = 0

    @property
    def asynchronous(self) -> bool:
        return self._worker is not None

    def warm_up(self, width: int, bands: int) -> float:
        """Run the network once on a zero window of the stream's shape, before the first line, so
        that the backend's one-time start (cuDNN and cuBLAS handles, kernel selection, memory
        pools: 0.7 s for torch on an H100) is not paid by the first block's lines; seconds taken.
        Asynchronous, it runs on the worker thread, where every block runs (torch keeps its
        handles per thread). A failure breaks the enhancer like a failed block (raised here as
        :class:`EnhancementError`; every later call raises again)."""
        if self.blocks_run or self._in_flight or self._unfitted or self._windows or self._broken:
            raise EnhancementError("warm_up() runs before the first line")

        def run_once() -> list[tuple[np.ndarray, np.ndarray]]:
            window = self._host_array((1, bands, 2 * self.context + self.block, width))
            if self._worker is None:
                self.runner.infer({"cube": window}, ENHANCED)
            else:
                self._worker.submit(self.runner.infer, {"cube": window}, ENHANCED).result()
            return []

        start = time.perf_counter()
        self._guarded(run_once)
        return time.perf_counter() - start

    @property
    def look_ahead_lines(self) -> int:
        return self.block - 1 + self.context + (self.block if self.asynchronous else 0)

    def push(self, line: np.ndarray, valid: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """One ``(width, bands)`` line (invalid pixels may hold anything) -> the enhanced lines
        ``(width, K)`` with their validity that are now complete, in order."""
        return self._guarded(self._push, line, valid)

    def flush(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """End of stream: everything still buffered, with zero padding after the last line (waits
        for the runs in flight); the worker thread, if any, ends here."""
        out = self._guarded(self._flush)
        self._broken = "flush() ended the stream"
        return out

    def close(self) -> None:
        """Stop the worker thread (asynchronous), cancelling runs not started; the runner is its
        owner's to deactivate. Safe to call more than once, and after :meth:`flush`."""
        if self._worker is not None:
            self._worker.shutdown(wait=True, cancel_futures=True)

    def _guarded(self, call: Any, *args: Any) -> list[tuple[np.ndarray, np.ndarray]]:
        if self._broken is not None:
            raise EnhancementError(f"the enhancer cannot be used: {self._broken}")
        try:
            return call(*args)
        except Exception as error:
            self._broken = f"a network run failed ({type(error).__name__}: {error})"
            if self._worker is not None:
                self._worker.shutdown(wait=True, cancel_futures=True)  # at most the run in progress
            raise EnhancementError(self._broken) from error

    def _push(self, line: np.ndarray, valid: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        line = _impute(np.asarray(line, dtype=np.float32), valid)
        if self.lo_hi is None:
            self._unfitted.append((line, valid))
            return self._fit() if len(self._unfitted) >= self.fit_lines else []
        return self._add(line, valid) + self._finished(wait=False)

    def _flush(self) -> list[tuple[np.ndarray, np.ndarray]]:
        out = self._fit() if self.lo_hi is None and self._unfitted else []
        if self._valid:
            window = self._windows[self._current]
            tail = np.empty((window.shape[0], self._fill + self.context, window.shape[2]), np.float32)
            tail[:, : self._fill] = window[:, : self._fill]
            tail[:, self._fill :] = window[:, self._fill - 1 : self._fill]  # the last line, repeated
            self._submit(tail, len(self._valid), None)
        out += self._finished(wait=True)
        if self._worker is not None:
            self._worker.shutdown()
        return out

    def _fit(self) -> list[tuple[np.ndarray, np.ndarray]]:
        lines = np.stack([line for line, _ in self._unfitted])
        self.lo_hi = self.bundle.normalization.fit(lines, np.stack([valid for _, valid in self._unfitted]))
        held, self._unfitted = self._unfitted, []
        out = []
        for line, valid in held:
            out += self._add(line, valid)
        return out

    def _add(self, line: np.ndarray, valid: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        assert self.lo_hi is not None
        first = not self._windows
        if first:
            width, bands = line.shape
            shape = (bands, 2 * self.context + self.block, width)
            self._windows = [self._host_array(shape) for _ in range(2 if self.asynchronous else 1)]
        window = self._windows[self._current]
        self._refit_if_left(line, valid)
        window[:, self._fill] = self.bundle.normalization.apply(line, *self.lo_hi).T
        if first:  # the context before the stream's first line repeats it, as the model pads
            window[:, : self._fill] = window[:, self._fill : self._fill + 1]
        self._fill += 1
        self._valid.append(valid)
        if self._fill < window.shape[1]:
            return []
        self._submit(window, self.block, self._current)
        following = (self._current + 1) % len(self._windows)
        out = []
        while any(used == following for _, _, used in self._in_flight):  # an older run reads it
            out += self._collect(self._in_flight.popleft())  # that run only: the new one goes on
        keep = 2 * self.context  # the block's last `context` lines are the next block's history
        self._windows[following][:, :keep] = window[:, self.block : self.block + keep]
        self._current, self._fill = following, keep
        return out

    def _refit_if_left(self, line: np.ndarray, valid: np.ndarray) -> None:
        """Fit ``lo``/``hi`` again on the last :data:`REFIT_LINES` lines when each of them was
        mostly beyond :data:`REFIT_BOUND` (the module docstring)."""
        assert self.lo_hi is not None
        if self._before_refit is not None:  # on probation: a burst of corrupt lines ended?
            if not self._beyond(line, self._before_refit):
                self.lo_hi, self._before_refit = self._before_refit, None
                self.refits_undone += 1
                self._beyond_range.clear()
                return
            self._probation -= 1
            if self._probation == 0:
                self._before_refit = None
        if not self._beyond(line, self.lo_hi):
            self._beyond_range.clear()
            return
        self._beyond_range.append((line.copy(), valid.copy()))  # (only while such a run lasts)
        if len(self._beyond_range) >= REFIT_LINES:
            lines, valids = zip(*self._beyond_range, strict=True)
            if np.any(valids):
                if self._before_refit is None:  # a refit on probation keeps the first fit
                    self._before_refit = self.lo_hi
                self._probation = REFIT_PROBATION
                self.lo_hi = self.bundle.normalization.fit(np.stack(lines), np.stack(valids))
                self.refits += 1
            self._beyond_range.clear()

    def _beyond(self, line: np.ndarray, lo_hi: tuple[float, float]) -> bool:
        """Whether most of the line (every 16th pixel) lies beyond :data:`REFIT_BOUND` under
        ``lo_hi``."""
        sample = self.bundle.normalization.apply(line[::16], *lo_hi)
        return bool(np.count_nonzero(np.abs(sample) > REFIT_BOUND) > sample.size / 2)

    def _host_array(self, shape: tuple[int, ...]) -> np.ndarray:
        """A zeroed float32 window from the runner's :meth:`~edge_had.runtime.base.Runner.host_array`
        (page-locked memory for torch on CUDA), or numpy's for a runner without one."""
        host_array = getattr(self.runner, "host_array", None)
        return np.zeros(shape, np.float32) if host_array is None else host_array(shape)

    def _submit(self, window: np.ndarray, count: int, used: int | None) -> None:
        """Start the model on ``window`` (``context`` rows, then the lines, then look-ahead) for
        its first ``count`` lines after the leading context (``used``: which window it reads)."""
        valid, self._valid = self._valid[:count], self._valid[count:]
        feed = {"cube": window[None]}
        if self._worker is None:
            run: Future = Future()
            run.set_result(self.runner.infer(feed, ENHANCED))
        else:
            run = self._worker.submit(self.runner.infer, feed, ENHANCED)
        self._in_flight.append((run, valid, -1 if used is None else used))

    def _finished(self, wait: bool) -> list[tuple[np.ndarray, np.ndarray]]:
        """The lines of the runs that have finished (all of them with ``wait``), in order; a
        run's error is raised here."""
        out = []
        while self._in_flight and (wait or self._in_flight[0][0].done()):
            out += self._collect(self._in_flight.popleft())
        return out

    def _collect(self, entry: tuple[Future, list[np.ndarray], int]) -> list[tuple[np.ndarray, np.ndarray]]:
        """The lines of one run (waits for it; its error is raised here)."""
        run, valid, _ = entry
        enhanced = run.result()["enhanced"][0]  # (K, lines, width)
        self.blocks_run += 1
        c = self.context
        return [(enhanced[:, c + i, :].T.astype(np.float64), valid[i]) for i in range(len(valid))]


def _impute(line: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Invalid pixels get the mean valid spectrum of the line (the networks' receptive fields
    would otherwise spread NaN to neighbouring pixels and lines)."""
    if valid.all():
        return line
    out = line.copy()
    out[~valid] = line[valid].mean(axis=0) if valid.any() else 0.0
    return out
