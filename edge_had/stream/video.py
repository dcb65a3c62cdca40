"""The waterfall as video: the last ``height`` score lines, colour-mapped, events boxed, one frame
every ``every`` lines; written as MP4 through OpenCV (works with the headless build) and shown
live in a window where OpenCV has a GUI and a display exists (:func:`window_unavailable_reason`
says why not otherwise).

Scores are shown as ``log1p`` and scaled by the 99.5th percentile of the lines seen so far (causal,
like everything in the loop), so a frame never uses information from later lines.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np


def window_unavailable_reason() -> str | None:
    """None when a live OpenCV window can open here, else why it cannot."""
    try:
        import cv2
    except Exception as error:  # noqa: BLE001 - any import failure is the reason
        return f"OpenCV cannot be imported ({error})"
    gui = next(
        (line.split(":", 1)[1].strip() for line in cv2.getBuildInformation().splitlines() if "GUI:" in line),
        "",
    )
    if gui in ("", "NONE"):
        return "this OpenCV has no GUI (opencv-python-headless); install opencv-python for live windows"
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display (DISPLAY / WAYLAND_DISPLAY unset)"
    return None


class WaterfallVideo:
    def __init__(self, path: str | Path | None, width: int, *, height: int = 256, every: int = 8,
                 fps: float = 30.0, show: bool = False) -> None:  # fmt: skip
        import cv2

        self.cv2 = cv2
        self.height, self.every, self.width = height, every, width
        self.rows = np.zeros((height, width), dtype=np.float32)
        self.indices = np.full(height, -1)
        self.events: list[Any] = []
        self.history: list[float] = []
        self.frames = 0
        self.lines = 0  # lines added: a frame every `every` of them, whatever their indices
        self._events_since_frame = False  # events added that no frame has drawn yet
        self.writer = None
        if path is not None:
            # MPEG-4 frames have even sides: an odd line width gets a black column, not one cut off
            self.writer = cv2.VideoWriter(
                str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (width + width % 2, height + height % 2)
            )
            if not self.writer.isOpened():
                raise OSError(f"{path}: OpenCV cannot write MP4 here")
        self.show = show

    def add_line(self, index: int, scores: np.ndarray) -> None:
        values = np.log1p(np.nan_to_num(np.maximum(scores, 0.0), nan=0.0)).astype(np.float32)
        self.rows = np.roll(self.rows, -1, axis=0)
        self.indices = np.roll(self.indices, -1)
        self.rows[-1], self.indices[-1] = values, index
        self.history.append(float(np.percentile(values, 99.5)))
        self.lines += 1
        if self.lines % self.every == 0:
            self._frame()

    def add_events(self, events: list[Any]) -> None:
        self.events += events
        self._events_since_frame = self._events_since_frame or bool(events)

    def _drop_events_off_screen(self) -> None:
        """Events whose last line has scrolled off (every frame drew each event ever seen: 3 ms a
        line after 10 000 events, under the pipeline's lock)."""
        shown = self.indices[self.indices >= 0]
        if shown.size:
            oldest = int(shown.min())
            self.events = [event for event in self.events if event.last_line >= oldest]

    def _frame(self) -> None:
        cv2 = self.cv2
        self._events_since_frame = False
        self._drop_events_off_screen()
        del self.history[:-512]
        scale = max(float(np.median(self.history)), 1e-6) * 1.5
        image = np.clip(self.rows / scale * 255, 0, 255).astype(np.uint8)
        frame = cv2.applyColorMap(image, cv2.COLORMAP_INFERNO)
        for event in self.events:
            # the rows showing the event's lines (indices may have gaps: rows are lines shown)
            rows = np.flatnonzero((self.indices >= event.first_line) & (self.indices <= event.last_line))
            if rows.size:
                top, bottom = int(rows[0]), int(rows[-1])
                cv2.rectangle(
                    frame,
                    (event.first_pixel - 2, top - 2),
                    (event.last_pixel + 2, bottom + 2),
                    (0, 255, 0),
                    1,
                )
        if self.writer is not None:
            self.writer.write(np.pad(frame, ((0, self.height % 2), (0, self.width % 2), (0, 0))))
        if self.show:
            cv2.imshow("edge-had waterfall", frame)
            cv2.waitKey(1)
        self.frames += 1

    def close(self) -> None:
        """A last frame for the lines since the last one (and the events the end of the stream
        closed), then release the writer."""
        if self.lines and (self.lines % self.every or self._events_since_frame):
            self._frame()
        if self.writer is not None:
            self.writer.release()
        if self.show:
            self.cv2.destroyAllWindows()
