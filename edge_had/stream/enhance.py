"""The enhancement model in the line loop: blocks of lines through a runner, in order.

Lines are collected until ``block`` new lines plus ``context`` look-ahead lines are buffered;
then the model runs on the window ``[first - context, last + context]`` (``block + 2 context``
lines, 22 by default: the spectral branch's 7 x 7 receptive field needs 3 lines each side) and the
``block`` new lines are emitted as enhanced ``(width, K)`` lines, ``x_k + alpha_spe f_spe +
alpha_spa f_spa``. The spatial student runs on the same window: it is a low-frequency field, and
refreshing it once per block is the refresh interval of the edge budget (there it saw a 64-line
buffer; here the window - a documented simplification). At the start and the end of the stream
the missing context is zero padding, as the offline model pads the scene's borders: a whole
scene pushed as one block with ``context=0`` equals offline enhancement (a test); with context
the spatial student sees a few zero lines more than offline and differs slightly (~0.6 % on a
random model).

**Normalisation** cannot see the whole image in a stream: its ``lo``/``hi`` are fitted on the
first ``fit_lines`` lines (held back until then) and frozen. **Latency**: a line waits for the
rest of its block and the look-ahead: up to ``block - 1 + context`` line periods.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np


class StreamEnhancer:
    def __init__(
        self, bundle: Any, runner: Any, *, block: int = 16, context: int = 3, fit_lines: int = 16
    ) -> None:
        if block < 1 or context < 0 or fit_lines < 1:
            raise ValueError("block and fit_lines must be >= 1, context >= 0")
        self.bundle, self.runner = bundle, runner
        self.block, self.context, self.fit_lines = block, context, fit_lines
        self.lo_hi: tuple[float, float] | None = None
        self._unfitted: list[tuple[np.ndarray, np.ndarray]] = []
        self._history: deque[np.ndarray] = deque(maxlen=context)  # normalised lines before the block
        self._queue: list[tuple[np.ndarray, np.ndarray]] = []  # (normalised line, valid) not yet emitted
        self.blocks_run = 0

    @property
    def look_ahead_lines(self) -> int:
        return self.block - 1 + self.context

    def push(self, line: np.ndarray, valid: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """One ``(width, bands)`` line (invalid pixels may hold anything) -> the enhanced lines
        ``(width, K)`` with their validity that are now complete, in order."""
        line = _impute(np.asarray(line, dtype=np.float32), valid)
        if self.lo_hi is None:
            self._unfitted.append((line, valid))
            if len(self._unfitted) < self.fit_lines:
                return []
            stacked = np.stack([ln for ln, _ in self._unfitted])
            mask = np.stack([v for _, v in self._unfitted])
            self.lo_hi = self.bundle.normalization.fit(stacked, mask)
            pending, self._unfitted = self._unfitted, []
            out = []
            for held, held_valid in pending:
                out += self._add(held, held_valid)
            return out
        return self._add(line, valid)

    def flush(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """End of stream: everything still buffered, with zero padding after the last line."""
        out = []
        if self.lo_hi is None and self._unfitted:
            stacked = np.stack([ln for ln, _ in self._unfitted])
            self.lo_hi = self.bundle.normalization.fit(stacked, np.stack([v for _, v in self._unfitted]))
            pending, self._unfitted = self._unfitted, []
            for held, held_valid in pending:
                out += self._add(held, held_valid)
        if self._queue:
            out += self._run(len(self._queue), final=True)
        return out

    def _add(self, line: np.ndarray, valid: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        assert self.lo_hi is not None
        self._queue.append((self.bundle.normalization.apply(line, *self.lo_hi), valid))
        if len(self._queue) >= self.block + self.context:
            return self._run(self.block, final=False)
        return []

    def _run(self, count: int, final: bool) -> list[tuple[np.ndarray, np.ndarray]]:
        """Enhance the first ``count`` queued lines with their context; emit them."""
        before = list(self._history)
        after = [ln for ln, _ in self._queue[count : count + self.context]]
        window = [*before, *(ln for ln, _ in self._queue[:count]), *after]
        width, bands = window[0].shape
        pad_before = self.context - len(before)
        pad_after = self.context - len(after) if final else 0
        cube = np.zeros((pad_before + len(window) + pad_after, width, bands), dtype=np.float32)
        cube[pad_before : pad_before + len(window)] = np.stack(window)
        outputs = self.runner.infer({"cube": np.ascontiguousarray(cube.transpose(2, 0, 1)[None])})
        enhanced = outputs["enhanced"][0].transpose(1, 2, 0)  # (lines, width, K)
        start = self.context  # the window always begins with `context` lines (real or padding)
        emitted = [(enhanced[start + i].astype(np.float64), self._queue[i][1]) for i in range(count)]
        for ln, _ in self._queue[:count]:
            self._history.append(ln)
        self._queue = self._queue[count:]
        self.blocks_run += 1
        return emitted


def _impute(line: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Invalid pixels get the mean valid spectrum of the line (the networks' receptive fields
    would otherwise spread NaN to neighbouring pixels and lines)."""
    if valid.all():
        return line
    out = line.copy()
    out[~valid] = line[valid].mean(axis=0) if valid.any() else 0.0
    return out
