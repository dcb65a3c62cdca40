"""Errors the package raises on purpose: each names the file (if any) and the problem."""

from __future__ import annotations

from pathlib import Path


class EdgeHadError(Exception):
    """Base class of every error edge-had raises deliberately."""


class SceneError(EdgeHadError, ValueError):
    """A scene could not be read or is unusable; the message names the file and the problem."""

    def __init__(self, problem: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}{problem}")
