"""The ten real ABU scenes: published global-RX AUCs reproduced, fast path bounded, eval JSON.

Reference values: ../shared/data/README.md (= the RX column published with the data set,
Kang et al. 2017), copied here as independent constants.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_had.cli import main
from edge_had.detectors import rx, rx_reference
from edge_had.eval.metrics import roc_auc
from edge_had.io import load_scene

PUBLISHED_RX_AUC = {
    "abu-airport-3": 0.9288,
    "abu-airport-4": 0.9526,
    "abu-beach-1": 0.9807,
    "abu-beach-2": 0.9106,
    "abu-beach-3": 0.9998,
    "abu-urban-1": 0.9907,
    "abu-urban-2": 0.9946,
    "abu-urban-3": 0.9513,
    "abu-urban-4": 0.9887,
    "abu-urban-5": 0.9692,
}
# "to 4 decimals": the published values are rounded, so |ours - published| <= 5e-5.
PUBLISHED_TOLERANCE = 5e-5
# The fast path (float32 scoring) must rank pixels like the oracle: stated AUC tolerance.
FAST_PATH_AUC_TOLERANCE = 1e-4
FAST_PATH_SCORE_RTOL = 1e-4


@pytest.fixture(scope="module")
def eval_report(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "rx.json"
    assert main(["eval", "--data", str(data_dir), "--detector", "rx", "--quiet", "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_cli_eval_reproduces_published_rx_auc(eval_report):
    assert eval_report["schema_version"] == 1
    assert eval_report["detector"] == {"name": "rx", "precision": "float64", "regularization": 0.0}
    measured = {scene["name"]: scene["auc"] for scene in eval_report["scenes"]}
    assert set(measured) == set(PUBLISHED_RX_AUC)
    for name, published in PUBLISHED_RX_AUC.items():
        assert abs(measured[name] - published) <= PUBLISHED_TOLERANCE, (name, measured[name], published)
    assert eval_report["mean_auc"] == pytest.approx(np.mean(list(measured.values())))


def test_eval_report_fields(eval_report):
    for scene in eval_report["scenes"]:
        assert set(scene) >= {"name", "bands", "auc", "auc_dtau", "auc_ftau", "pd_at_far", "seconds"}
        assert set(scene["pd_at_far"]) == {"0.001", "0.0001"}
        assert 0.0 < scene["seconds"] < 10.0
        assert 0.0 <= scene["auc_ftau"] < scene["auc_dtau"] <= 1.0


@pytest.mark.parametrize("name", sorted(PUBLISHED_RX_AUC))
def test_fast_path_matches_oracle_on_real_scene(data_dir, name):
    scene = load_scene(data_dir / f"{name}.mat")
    reference = rx_reference(scene.cube)
    fast = rx(scene.cube)
    assert np.max(np.abs(fast - reference)) / np.max(reference) < FAST_PATH_SCORE_RTOL
    assert abs(roc_auc(fast, scene.gt) - roc_auc(reference, scene.gt)) < FAST_PATH_AUC_TOLERANCE
