"""The README's two set-up commands, CI and packaging stay consistent."""

from __future__ import annotations

import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (JetPack 6): the dev extra installs tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line.startswith("pip install")]


def test_readme_has_exactly_two_setup_commands_with_pinned_torch():
    commands = readme_commands()
    assert len(commands) == 2, commands
    demo, tests = commands
    assert demo.endswith("edge-had demo") and "torch==2.13.0" in demo
    assert "pytest" in tests and "torch==2.13.0" in tests and "[dev" in tests


def test_ci_runs_the_readme_test_command_verbatim_with_data_required():
    ci = (ROOT / ".ci" / "run").read_text()
    assert readme_commands()[1] in ci.splitlines()
    assert "EDGE_HAD_REQUIRE_DATA=1" in ci


def test_scripts_folders_are_not_installed_packages():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["tool"]["setuptools"]["packages"]["find"]["include"] == ["edge_had*"]
    assert config["project"]["scripts"]["edge-had"] == "edge_had.cli:main"
    assert config["project"]["requires-python"] == ">=3.10"


def test_relative_links_in_the_docs_point_at_files_that_exist():
    """A doc moved or renamed leaves no dangling ``[text](path)`` link in the project's Markdown."""
    docs = [ROOT / "README.md", *sorted(ROOT.glob("*/*.md"))]
    dangling = []
    for doc in docs:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" not in target and not (doc.parent / target).exists():
                dangling.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert not dangling, dangling
