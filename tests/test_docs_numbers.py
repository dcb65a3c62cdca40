"""Numbers the documentation quotes agree with what produces them: the committed result files of
the benchmarks and the code's own counts (an audit of the README found several that had drifted
after the code changed: the event-threshold table, the plan's MFLOP, the install lists)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (JetPack 6): the dev extra installs tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
RESULTS = ROOT / "bench" / "results"


def table_row(text: str, first_cell: str) -> list[str]:
    """The cells of the markdown table row whose first cell is ``first_cell``."""
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row {first_cell!r}")


def test_streaming_auc_tables_are_the_committed_run() -> None:
    means = json.loads((RESULTS / "stream_auc.json").read_text())["mean"]
    tables = {
        "| | offline RX (native) |": ["offline rx", "offline rx (32 bands)", "stream rx", "offline enhanced",
                                      "stream enhanced"],
        "| hybrid RX | offline (32 bands) |": ["offline hybrid (32 bands)", "stream hybrid",
                                                "offline enhanced hybrid", "stream enhanced hybrid"],
    }  # fmt: skip
    for header, keys in tables.items():
        cells = table_row(README[README.index(header) :], "mean AUC")
        assert [cell.strip("*") for cell in cells[1:]] == [f"{means[key]:.4f}" for key in keys], header


def test_the_detector_choice_table_quotes_the_committed_stream_speed_run() -> None:
    """The lines/s of the README's detector table (first number of each cell) are the medians of
    bench/results/stream_cpu.json."""
    benchmarks = json.loads((RESULTS / "stream_cpu.json").read_text())["benchmarks"]
    speed = {
        bench["extra_info"]["pipeline"]: bench["extra_info"]["lines_per_round"] / bench["stats"]["median"]
        for bench in benchmarks
    }
    rows = {
        "`rx` (32 bands)": "plain causal RX, K=32",
        "`enhanced-rx` (default)": "enhancement (onnxruntime fp32) + causal RX, K=64",
        "`hybrid-rx` (32 bands)": "plain causal hybrid RX, K=32",
        "`enhanced-hybrid-rx`": "enhancement (onnxruntime fp32) + causal hybrid RX, K=64",
    }
    for row, pipeline in rows.items():
        quoted = re.search(r"[\d,]+", table_row(README, row)[2])
        assert quoted is not None and quoted.group() == f"{speed[pipeline]:,.0f}", row


@pytest.mark.parametrize(
    ("detector", "result"),
    [
        ("`rx`", "event_threshold.json"),
        ("`hybrid-rx`", "event_threshold_hybrid.json"),
        ("`enhanced-rx`", "event_threshold_enhanced.json"),
        ("`enhanced-hybrid-rx`", "event_threshold_enhanced_hybrid.json"),
    ],
)
def test_the_event_threshold_table_is_the_committed_run(detector: str, result: str) -> None:
    record = json.loads((RESULTS / result).read_text())
    section = README[README.index("| `stream --detector` | nominal (pfa 1e-6") :]
    cells = table_row(section, detector)

    def quoted(mean: dict[str, float]) -> str:
        return f"{mean['false_per_1000_lines']:.0f} / {mean['recall']:.2f} / {mean['precision']:.2f}"

    got = [cell.strip("*") for cell in cells[1:4]]
    assert got == [
        quoted(record["mean_at_nominal_1e-6"]),
        quoted(record["pfa"]["mean_held_out"]),
        quoted(record["pfa_and_min_area"]["mean_held_out"]),
    ]


def test_the_plan_figures_quoted_are_the_plans() -> None:
    from edge_had.stream.plan import plan

    for detector, phrase in (
        ("enhanced-rx", "FX10 on an AGX Orin: {} MFLOP"),
        ("enhanced-hybrid-rx", "hybrid RX {} MFLOP"),
    ):
        mflop = plan("agx-orin-64gb", "fx10", detector)["flops_per_line"] / 1e6
        assert phrase.format(f"{mflop:.1f}") in " ".join(README.split()), (detector, mflop)


def test_the_jetson_install_lines_hold_every_base_dependency_but_torch() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = {re.split(r"[<>=!~ ]", dep)[0] for dep in config["project"]["dependencies"]} - {"torch"}
    readme_line = re.search(r"`pip install (\"numpy[^`]*)`", " ".join(README.split()))
    assert readme_line is not None
    tensorrt_md = (ROOT / "export" / "TENSORRT.md").read_text()
    tensorrt_line = next(line for line in tensorrt_md.splitlines() if line.startswith('pip install "numpy'))
    for line in (readme_line.group(1), tensorrt_line.split("#")[0].removeprefix("pip install")):
        names = {re.split(r"[<>=!~ ]", name.strip('"'))[0] for name in line.split()}
        assert names == wanted, line
        # NumPy stays 1.x under JetPack 6's wheels, and the OpenCV that still accepts it
        assert '"numpy<2"' in line.split() and '"opencv-python-headless<4.11"' in line.split(), line


def test_the_reduction_kernel_paragraph_quotes_the_committed_ten_scene_run() -> None:
    """README and bench/README: the triangle reduction streamed on the ten scenes
    (bench/results/stream_reduction_kernel_scenes.json)."""
    summary = json.loads((RESULTS / "stream_reduction_kernel_scenes.json").read_text())["summary"]
    flat = " ".join(README.split())
    bench_flat = " ".join((ROOT / "bench" / "README.md").read_text().split())
    for detector, name in (("rx", "RX"), ("hybrid-rx", "hybrid")):
        linear, triangle = summary[f"{detector} linear"], summary[f"{detector} triangle"]
        aucs = f"{name} {linear['mean_auc']:.4f} -> {triangle['mean_auc']:.4f}"
        assert aucs in flat and aucs in bench_flat, aucs
        before, after = (f"{k['events']} / {k['false_events']}" for k in (linear, triangle))
        counts = f"{before} -> {after}"
        assert counts in flat, counts
    higher = [summary[f"{d} triangle vs linear"]["higher"] for d in ("rx", "hybrid-rx")]
    assert f"higher on {higher[0]} and {higher[1]} scenes" in flat
    largest = max(abs(summary[f"{d} triangle vs linear"]["largest_difference"]) for d in ("rx", "hybrid-rx"))
    assert f"no scene by more than {largest:.4f}" in flat


def test_the_payload_paragraph_quotes_the_committed_payload_run() -> None:
    """README and bench/README: the many-band payload scene (bench/results/payload_detectors.json)."""
    run = json.loads((RESULTS / "payload_detectors.json").read_text())
    offline, stream = run["offline_auc"], run["stream_auc"]
    flat = " ".join(README.split())
    bench_flat = " ".join((ROOT / "bench" / "README.md").read_text().split())

    def auc(name: str) -> str:
        return f"{offline[name]:.4f}"

    quoted = {
        f"hybrid RX {auc('resampled-hybrid-rx (adapter linear)')} and enhanced hybrid RX "
        f"{auc('enhanced-hybrid-rx (adapter linear)')} against {auc('hybrid-rx')}": flat,
        f"(global RX: {auc('resampled-rx (adapter linear)')} and {auc('enhanced-rx (adapter linear)')} "
        f"against {auc('rx')})": flat,
        f"scores {auc('resampled-rx (adapter triangle)')} / {auc('resampled-hybrid-rx (adapter triangle)')} "
        f"(global / hybrid) and the enhanced detectors {auc('enhanced-rx (adapter triangle)')} / "
        f"{auc('enhanced-hybrid-rx (adapter triangle)')}": flat,
        f"streamed {stream['hybrid-rx (reduction linear)']:.4f} (linear 32-band reduction) / "
        f"{stream['hybrid-rx (reduction triangle)']:.4f} (triangle)": bench_flat,
    }
    for text, document in quoted.items():
        assert text in document, text


def test_the_h200_stream_tables_are_the_committed_device_runs() -> None:
    """bench/GPU.md's H200 stream tables: lines/s, late lines, statistics+rx p99 and AUC of each
    stream of each run (bench/results/device_check_h200_run*.json), in the run's column."""
    gpu = (ROOT / "bench" / "GPU.md").read_text()
    # heading -> (the runs, the cell index of the first run's column; runs 1-2 follow an H100 column)
    tables = {"### H200, runs 1 and 2": ((1, 2), 2), "### H200, runs 3 to 5": ((3, 4, 5), 1)}
    for heading, (runs, first_cell) in tables.items():
        section = gpu[gpu.index(heading) :]
        for cell, run in enumerate(runs, start=first_cell):
            for stream in json.loads((RESULTS / f"device_check_h200_run{run}.json").read_text())["streams"]:
                detector = stream["detector"]
                if stream.get("reduction_kernel") == "triangle":
                    row = f"`{detector} --reduction-kernel triangle`"
                elif stream["asynchronous"]:
                    row = f"`{detector} --async-enhance`"
                else:
                    row = f"`{detector}`" + ("" if detector.startswith("enhanced") else " (32 bands)")
                want = (
                    f"{stream['lines_per_second']:,.0f}, {stream['deadline_misses']}, "
                    f"{stream['latency_ms']['statistics+rx']['p99']:.2f}, {stream['auc']:.4f}"
                )
                assert table_row(section, row)[cell] == want, (run, row)


def python_blocks() -> list[tuple[str, str]]:
    """(file, code) of every ```python block in the markdown documentation."""
    docs = [
        ROOT / "README.md",
        *sorted((ROOT / "bench").glob("*.md")),
        *sorted((ROOT / "export").glob("*.md")),
    ]
    return [
        (doc.name, code) for doc in docs for code in re.findall(r"```python\n(.*?)```", doc.read_text(), re.S)
    ]


@pytest.mark.parametrize(("doc", "code"), python_blocks())
def test_python_examples_compile_and_call_the_package_with_its_own_keywords(doc: str, code: str) -> None:
    """Each documented Python example parses (a comment after a line continuation does not), and
    each call of a function it imports from edge_had passes only keywords that function takes."""
    import ast
    import importlib
    import inspect

    tree = ast.parse(code, filename=doc)
    imported = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("edge_had"):
            module = importlib.import_module(node.module)
            imported.update({alias.asname or alias.name: getattr(module, alias.name) for alias in node.names})
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in imported:
            parameters = inspect.signature(imported[node.func.id]).parameters
            unknown = {k.arg for k in node.keywords if k.arg is not None} - set(parameters)
            assert not unknown, f"{doc}: {node.func.id}() takes no {sorted(unknown)}"


def test_the_inputs_only_int8_fold_gate_table_is_the_committed_runs() -> None:
    """export/README.md's fold-gate table after the Q/DQ placement change, cell by cell, against the
    JSON of each run it quotes."""
    text = (ROOT / "export" / "README.md").read_text()
    results = ROOT / "export" / "results"

    def changes(name: str) -> dict[str, float]:
        rows = json.loads((results / name).read_text())["rows"]
        return {row["scene"]: row["auc"]["int8"] - row["auc"]["fp32"] for row in rows}

    columns = [
        changes("gate_folds_supervised-ranking_seed0_inputs_only_minmax.json"),
        changes("gate_folds_supervised-ranking_seed0_outputs_too_written_minmax.json"),
        changes("gate_folds_supervised-ranking_seed0_inputs_only_entropy.json"),
        changes("gate_folds_supervised-ranking_seed0_entropy.json"),
    ]
    fp32 = {
        row["scene"]: row["auc"]["fp32"]
        for row in json.loads(
            (results / "gate_folds_supervised-ranking_seed0_inputs_only_minmax.json").read_text()
        )["rows"]
    }
    table = text[text.index("| scene | fold | FP32 | INT8 MinMax, inputs only |") :]
    for scene in fp32:
        cells = table_row(table, scene)
        assert cells[2] == f"{fp32[scene]:.4f}", scene
        for cell, column in zip(cells[3:7], columns, strict=True):
            delta = column[scene]
            assert cell == f"{delta:+.4f}" + (" FAIL" if abs(delta) > 0.002 else ""), (scene, cell, delta)
    assert all(abs(delta) <= 0.002 for delta in columns[2].values())  # "passes on all ten"
    assert max(abs(delta) for delta in columns[2].values()) == pytest.approx(0.0011, abs=5e-5)
