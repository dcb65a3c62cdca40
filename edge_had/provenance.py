"""Which code made a result: the package's own git commit (records of trainings and releases)."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path


@functools.cache
def package_commit() -> str:
    """The commit of the package's own checkout (not of the folder the command runs in), with
    ``+dirty`` when its tracked files have changes; ``unknown`` outside a git checkout."""
    package = Path(__file__).resolve().parent

    def git(*arguments: str) -> str:
        command = ["git", "-C", str(package), *arguments]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()

    try:
        top = Path(git("rev-parse", "--show-toplevel")).resolve()
        if top != package.parent:  # an installed package inside some other repository
            return "unknown"
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")
