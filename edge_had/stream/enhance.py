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

from typing import Any

import numpy as np


class StreamEnhancer:
    """See the module docstring. Lines are written once, transposed, into a preallocated window
    ``(bands, context + block + context, width)`` - the network's input layout - so a block run
    copies nothing; after a run the last ``2 context`` lines move to the front."""

    def __init__(
        self, bundle: Any, runner: Any, *, block: int = 16, context: int = 3, fit_lines: int = 16
    ) -> None:
        if block < 1 or context < 0 or fit_lines < 1:
            raise ValueError("block and fit_lines must be >= 1, context >= 0")
        self.bundle, self.runner = bundle, runner
        self.block, self.context, self.fit_lines = block, context, fit_lines
        self.lo_hi: tuple[float, float] | None = None
        self._unfitted: list[tuple[np.ndarray, np.ndarray]] = []
        self._window: np.ndarray | None = None  # (bands, 2 context + block, width)
        self._fill = context  # rows in use; the first `context` rows are the zero padding at the start
        self._valid: list[np.ndarray] = []  # validity of the lines not yet emitted, in order
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
            return self._fit() if len(self._unfitted) >= self.fit_lines else []
        return self._add(line, valid)

    def flush(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """End of stream: everything still buffered, with zero padding after the last line."""
        out = self._fit() if self.lo_hi is None and self._unfitted else []
        if self._valid:
            assert self._window is not None
            tail = np.zeros(
                (self._window.shape[0], self._fill + self.context, self._window.shape[2]), np.float32
            )
            tail[:, : self._fill] = self._window[:, : self._fill]
            out += self._emit(tail, len(self._valid))
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
        if self._window is None:
            width, bands = line.shape
            self._window = np.zeros((bands, 2 * self.context + self.block, width), dtype=np.float32)
        self._window[:, self._fill] = self.bundle.normalization.apply(line, *self.lo_hi).T
        self._fill += 1
        self._valid.append(valid)
        if self._fill < self._window.shape[1]:
            return []
        out = self._emit(self._window, self.block)
        keep = 2 * self.context  # the block's last `context` lines are the next block's history
        self._window[:, :keep] = self._window[:, self.block : self.block + keep]
        self._fill = keep
        return out

    def _emit(self, window: np.ndarray, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Run the model on ``window`` (``context`` rows, then the lines, then look-ahead) and
        return its first ``count`` lines after the leading context."""
        enhanced = self.runner.infer({"cube": window[None]})["enhanced"][0]  # (K, lines, width)
        c = self.context
        out = [(enhanced[:, c + i, :].T.astype(np.float64), self._valid[i]) for i in range(count)]
        self._valid = self._valid[count:]
        self.blocks_run += 1
        return out


def _impute(line: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Invalid pixels get the mean valid spectrum of the line (the networks' receptive fields
    would otherwise spread NaN to neighbouring pixels and lines)."""
    if valid.all():
        return line
    out = line.copy()
    out[~valid] = line[valid].mean(axis=0) if valid.any() else 0.0
    return out
