"""What `edge-had release` and `crossval` record and refuse (an audit of the training commands):
the package's own commit, every scene a stage-2 model's networks saw, alphas it would ignore, a
--crossval file that is not a report (before any training), a seed given twice."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import edge_had
from edge_had.cli import main
from edge_had.train.release import all_training_scenes, git_commit


def test_the_commit_is_the_packages_own_whatever_the_working_folder(tmp_path: Path, monkeypatch) -> None:
    other = tmp_path / "other"
    other.mkdir()
    subprocess.run(["git", "init", "-q", str(other)], check=True)
    subprocess.run(
        ["git", "-C", str(other), "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-q",
         "--allow-empty", "-m", "x"],
        check=True,
    )  # fmt: skip
    monkeypatch.chdir(other)  # the sidecar recorded this repository's HEAD
    package = Path(edge_had.__file__).resolve().parents[1]
    found = subprocess.run(["git", "-C", str(package), "rev-parse", "HEAD"], capture_output=True, text=True)
    commit = git_commit()
    if found.returncode != 0:  # an installed copy outside a checkout
        assert commit == "unknown"
        return
    dirty = subprocess.run(
        ["git", "-C", str(package), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert commit == found.stdout.strip() + ("+dirty" if dirty else "")


def test_a_stage_2_release_lists_the_stage_1_scenes_too() -> None:
    record = {
        "data": [{"name": "a", "sha256": "1"}, {"name": "b", "sha256": "2"}],
        "previous_run": {
            "data": [{"name": "a", "sha256": "1"}, {"name": "c", "sha256": "3"}],
            "previous_run": None,
        },
    }
    assert all_training_scenes(record) == [
        {"name": "a", "sha256": "1"},
        {"name": "b", "sha256": "2"},
        {"name": "c", "sha256": "3"},
    ]


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (["--alpha-spe", "7", "--alpha-spa", "0.5"], "--alpha-spe, --alpha-spa: release chooses the alphas"),
        (["--crossval", "NOT_A_REPORT"], "not a crossval.json report"),
    ],
)
def test_release_refuses_before_training(tmp_path: Path, capsys, options: list[str], says: str) -> None:
    bogus = tmp_path / "bogus.json"
    bogus.write_text('{"scenes": []}')
    options = [str(bogus) if option == "NOT_A_REPORT" else option for option in options]
    out = tmp_path / "model"
    assert main(["release", "--data", str(tmp_path), "--out", str(out), *options]) == 2
    assert says in capsys.readouterr().err
    assert not out.exists()  # nothing trained


def test_crossval_refuses_a_seed_given_twice(tmp_path: Path, capsys) -> None:
    assert (
        main(["crossval", "--data", str(tmp_path), "--out", str(tmp_path / "cv"), "--seeds", "0", "0"]) == 2
    )
    assert "--seeds 0 0: each seed once" in capsys.readouterr().err


def test_a_stage_2_recipe_takes_the_spectral_settings_of_its_stage_1_run() -> None:
    """release --stage 2 recorded encoder pretrained and reverse distillation on, the defaults,
    though the stage-1 run had trained a random encoder without it (a review)."""
    from edge_had.train.config import TrainConfig
    from edge_had.train.release import recipe

    stage1 = TrainConfig(
        data="", out="", stage="1", encoder="random", reverse_distillation=False, ranking_epochs=1
    )
    stage2 = TrainConfig(data="", out="", stage="2")
    written = recipe(stage2, stage1.to_json())
    assert (written["encoder"], written["reverse_distillation"], written["ranking_epochs"]) == (
        "random",
        False,
        1,
    )
    assert recipe(stage2)["encoder"] == "pretrained"


def test_exclude_given_twice_leaves_out_both() -> None:
    import argparse

    from edge_had.train.cli import add_train_arguments

    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    args = parser.parse_args(["--out", "x", "--exclude", "a", "--exclude", "b", "c"])
    assert args.exclude == ["a", "b", "c"]
