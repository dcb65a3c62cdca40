"""Global RX: edge-had's fast path vs ``spectral.rx`` on every real scene, in the same run.

Both sides include the statistics (mean, covariance, inverse) and receive the cube as stored
(integer counts). The AUC of both is recorded with each timing and must agree to 4 decimals.

    python -m pytest bench/test_bench_rx.py --benchmark-json=bench/results/rx_cpu.json
    python bench/summarize_rx.py bench/results/rx_cpu.json
"""

from __future__ import annotations

import pytest

from edge_had.detectors import rx
from edge_had.eval.metrics import roc_auc
from edge_had.settings import data_dir

spectral = pytest.importorskip("spectral")
SCENES = sorted(path.stem for path in data_dir().glob("*.mat")) or ["(no data)"]
IMPLEMENTATIONS = {"edge_had.rx": rx, "spectral.rx": spectral.rx}


@pytest.fixture(scope="module")
def cubes(scene_paths):
    from scipy.io import loadmat

    return {path.stem: loadmat(path) for path in scene_paths}


# The implementation varies fastest, so both sides of a scene run back to back (this machine is
# shared: slow phases then hit both). The summary compares minima (and shows medians).
@pytest.mark.parametrize("implementation", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("scene", SCENES)
def test_global_rx(benchmark, cubes, scene, implementation):
    data = cubes[scene]
    cube, gt = data["data"], data["map"] != 0
    benchmark.group = scene
    benchmark.extra_info.update(scene=scene, implementation=implementation, shape=list(cube.shape))
    scores = benchmark.pedantic(IMPLEMENTATIONS[implementation], args=(cube,), rounds=15, warmup_rounds=2)
    auc = roc_auc(scores, gt)
    benchmark.extra_info["auc"] = auc
    reference = roc_auc(spectral.rx(cube), gt)
    assert round(auc, 4) == round(reference, 4)
