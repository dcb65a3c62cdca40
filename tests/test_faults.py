"""The fault-injecting source, and the pipeline's exact line accounting under every fault it
injects (counted independently from what the source says it did)."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from edge_had.stream.causal import CausalSettings
from edge_had.stream.faults import FAULTS, faulty_lines, parse_faults
from edge_had.stream.line_order import LEAP_TRUST_LINES
from edge_had.stream.pipeline import StreamPipeline
from edge_had.stream.run import band_reduction, run_stream
from edge_had.stream.sources import synthetic_lines


def test_fault_names_are_parsed_strictly() -> None:
    assert parse_faults("all") == FAULTS
    assert parse_faults("nan, drop") == ("nan", "drop")
    with pytest.raises(ValueError, match="unknown faults"):
        parse_faults("nan,gremlins")


def test_every_fault_is_injected_and_seeded() -> None:
    first = list(faulty_lines(synthetic_lines(32, 16, lines=600), rate=0.05, seed=1))
    again = list(faulty_lines(synthetic_lines(32, 16, lines=600), rate=0.05, seed=1))
    assert [line.meta["faults"] for line in first] == [line.meta["faults"] for line in again]
    seen = {name for line in first for name in line.meta["faults"]}
    assert seen == set(FAULTS) - {"drop"}  # dropped lines never arrive
    assert len({line.index for line in first}) < 600  # some indices were dropped


def test_pipeline_accounts_for_every_faulty_line_exactly() -> None:
    lines = list(faulty_lines(synthetic_lines(32, 16, lines=800, seed=2), rate=0.03, seed=3))
    # independent tally of what the pipeline (no reorder window) must do with this exact sequence:
    # a line that goes back is rejected (a duplicate when among the 16 latest processed); one that
    # leaps over a gap waits for the next line, taken if that moves forward from it (by up to
    # LEAP_TRUST_LINES), else rejected
    last, leapt, expected = None, None, {"scored": 0, "rejected": 0, "duplicates": 0}
    processed: deque[int] = deque(maxlen=16)

    def take(line) -> None:
        nonlocal last
        last = line.index
        processed.append(line.index)
        expected["scored" if line.pixels.shape == (32, 16) else "rejected"] += 1

    for line in lines:
        if leapt is not None:
            if leapt.index <= line.index <= leapt.index + LEAP_TRUST_LINES:
                take(leapt)
            else:
                expected["rejected"] += 1
            leapt = None
        if last is not None and line.index <= last:
            expected["rejected"] += 1
            expected["duplicates"] += line.index in processed
        elif last is not None and line.index > last + 1:
            leapt = line
        else:
            take(line)
    if leapt is not None:  # the last line leapt: nothing confirmed it, taken if it leapt little
        if leapt.index - last <= LEAP_TRUST_LINES:
            take(leapt)
        else:
            expected["rejected"] += 1
    # missing: the indices between the first and the last line processed that never arrived (a
    # line that came after its successor is rejected, not missing as well)
    expected["missing"] = len(set(range(lines[0].index, last + 1)) - {line.index for line in lines})
    assert any("reorder" in line.meta["faults"] for line in lines)
    pipeline = StreamPipeline(
        32, 16, reduction=band_reduction(16, 8), settings=CausalSettings(warmup_lines=5)
    )
    run_stream(iter(lines), pipeline)
    health = pipeline.health
    assert health.lines_in == len(lines)
    assert (health.lines_scored, health.lines_rejected) == (expected["scored"], expected["rejected"])
    assert (health.missing_indices, health.duplicates) == (expected["missing"], expected["duplicates"])
    assert health.to_dict()["accounting_ok"]
    nan_or_inf = sum(
        1 for line in lines if {"nan", "inf"} & set(line.meta["faults"]) and line.pixels.shape == (32, 16)
    )
    assert health.flags["masked-pixels"] >= 1 and health.flags["masked-pixels"] <= nan_or_inf


@pytest.mark.parametrize("window", [0, 2])
def test_a_line_later_than_the_reorder_window_is_rejected_not_missing(window: int) -> None:
    """Line 20 arrives after lines 21 to 21 + window (beyond the window: rejected as out of
    order), line 30 never does: one missing index. Line 20 was counted missing as well (a review:
    151 missing indices with none lost under reorder faults). Without a window, line 21 leaps
    over 20 and 20 does not continue from it: 21 is the one rejected, not missing either."""
    order = [*range(20), *range(21, 22 + window), 20, *range(22 + window, 40)]
    order.remove(30)
    lines = synthetic_lines(16, 8, lines=40, seed=1)
    pixels = {line.index: line.pixels for line in lines}
    pipeline = StreamPipeline(16, 8, settings=CausalSettings(warmup_lines=5), reorder_window=window)
    for index in order:
        pipeline.push(pixels[index], index, float(index))
    pipeline.finish()
    health = pipeline.health
    rejected = "out-of-order index" if window else "implausible index jump"
    assert dict(health.reasons) == {rejected: 1} and health.missing_indices == 1
    assert health.lines_scored == 38 and health.to_dict()["accounting_ok"]


def test_short_soak_of_the_stream_command_with_every_fault(tmp_path) -> None:
    """The soak benchmark's command, 2 x 10^4 lines (bench/README.md runs 10^6)."""
    import json

    from edge_had.cli import main

    report_path = tmp_path / "soak.json"
    argv = ["stream", "--source", "synthetic", "--faults", "all", "--lines", "20000", "--detector", "rx",
            "--width", "64", "--bands", "16", "--json", str(report_path)]  # fmt: skip
    assert main(argv) == 0
    health = json.loads(report_path.read_text())["health"]
    assert health["accounting_ok"] and health["lines_in"] < 20000 + health["duplicates"]
    assert (
        health["lines_rejected"] > 0
        and health["missing_indices"] > 0
        and health["flags"]["masked-pixels"] > 0
    )
    assert health["lines_scored"] + health["lines_rejected"] + health["lines_dropped"] == health["lines_in"]


def test_a_nan_line_leaves_every_later_score_as_if_it_never_came() -> None:
    source = list(synthetic_lines(32, 16, lines=60, seed=5))
    settings = CausalSettings(warmup_lines=5)

    def scores(lines):
        out = {}
        pipeline = StreamPipeline(32, 16, settings=settings, on_result=lambda r: out.__setitem__(r.index, r))
        for line in lines:
            pipeline.push(line.pixels, line.index, line.timestamp)
        pipeline.finish()
        return out

    spoiled = [
        line if line.index != 30 else type(line)(30, line.timestamp, line.pixels * float("nan"))
        for line in source
    ]
    with_nan = scores(spoiled)
    without = scores([line for line in source if line.index != 30])
    assert with_nan[30].state == "rejected" and with_nan[30].reason == "no valid pixel"
    for index in range(31, 60):
        np.testing.assert_allclose(with_nan[index].scores, without[index].scores, rtol=1e-6)


def test_stalls_and_bursts_on_a_simulated_clock_follow_the_overload_policy() -> None:
    """Lines every second on a simulated clock: a line the loop reaches more than one budget after
    its timestamp (a stall) is processed and flagged; one more than max_lag late is dropped. (The
    line's own processing is timed on the real clock: at a 10 ms period a busy machine added
    deadline misses, 1 run in 4; a second leaves room for any.)"""
    from edge_had.stream.sources import Line

    period = 1.0
    base = list(synthetic_lines(32, 16, lines=40, seed=6))
    delays = {12: 1.5, 20: 3.5}  # the loop reaches these lines late by this much
    lines = [Line(line.index, line.index * period, line.pixels) for line in base]
    position = {"index": 0}

    def source():
        for line in lines:
            position["index"] = line.index
            yield line

    def clock() -> float:  # simulated: when the loop reaches the current line
        return position["index"] * period + delays.get(position["index"], 0.0)

    pipeline = StreamPipeline(32, 16, settings=CausalSettings(warmup_lines=5), budget_s=period)
    run_stream(source(), pipeline, max_lag_s=3 * period, clock=clock)
    health = pipeline.health
    assert health.deadline_misses == 1 and health.flags["deadline-miss"] == 1  # line 12
    assert health.lines_dropped == 1 and health.reasons["overload"] == 1  # line 20
    assert health.to_dict()["accounting_ok"]


@pytest.mark.parametrize(("block_periods", "dropped"), [(4.0, False), (24.0, True)])
def test_a_paced_enhanced_stream_drops_no_line_for_its_blocks_only_for_an_overload(
    block_periods: float, dropped: bool
) -> None:
    """On a simulated clock, the enhancer's network takes ``block_periods`` line periods per block
    of 16 lines: 4 is 25 % of the time the block's lines take to arrive, and the lines that
    arrive meanwhile wait no longer than the look-ahead - none is dropped (with a lag bound of 2
    periods, as before, some were: the review's 7-10 %); 24 periods per 16 lines is a real overload,
    and lines are dropped."""
    from edge_had.stream.onboard import build_pipeline
    from edge_had.stream.run import OVERLOAD_LINES, paced_max_lag_s
    from edge_had.stream.sources import Line

    rate = 100.0
    period = 1.0 / rate
    now = {"t": 0.0}
    base = list(synthetic_lines(32, 16, lines=120, seed=7))

    def source():  # a paced camera: a line is there at its timestamp, not before
        for line in base:
            now["t"] = max(now["t"], line.index * period)
            yield Line(line.index, line.index * period, line.pixels)

    def run(max_lag: float | None) -> int:
        with build_pipeline(32, 16, "enhanced-rx", line_rate_hz=rate) as onboard:
            runner = onboard.pipeline.enhancer.runner
            infer = runner.infer

            def slow(feed, outputs):  # noqa: ANN001, ANN202
                now["t"] += block_periods * period
                return infer(feed, outputs)

            runner.infer = slow
            lag = paced_max_lag_s(onboard.pipeline, rate) if max_lag is None else max_lag
            if max_lag is None:
                assert lag == pytest.approx((OVERLOAD_LINES + onboard.pipeline.look_ahead_lines) * period)
            now["t"] = 0.0
            run_stream(source(), onboard.pipeline, max_lag_s=lag, clock=lambda: now["t"])
        health = onboard.pipeline.health
        assert health.to_dict()["accounting_ok"]
        return health.reasons.get("overload", 0)

    assert (run(None) > 0) is dropped
    if not dropped:
        assert run(2 * period) > 0  # the bound of 2 periods, whatever the look-ahead


def test_events_of_a_stream_with_drops_and_duplicates_cover_every_scored_line(tmp_path) -> None:
    """Duplicated and dropped lines: every scored line still reaches the event detector in order,
    so the events are the 8-connected components of the written score map (a rejected duplicate
    used to replace a waiting line's result, or overtake it: 14 scored lines never counted)."""
    import json

    from scipy import ndimage

    from edge_had.cli import main

    argv = ["stream", "--source", "synthetic", "--detector", "rx", "--width", "64", "--bands", "16",
            "--lines", "300", "--faults", "drop,duplicate", "--fault-rate", "0.05", "--pfa", "1e-3",
            "--out", str(tmp_path), "--json", str(tmp_path / "report.json")]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["health"]["duplicates"] > 0 and report["health"]["missing_indices"] > 0
    scores = np.load(tmp_path / "scores.npy")
    hot = np.nan_to_num(scores, nan=-np.inf) > report["events"]["threshold"]
    _, components = ndimage.label(hot, structure=np.ones((3, 3)))
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert len(events) == components == report["events"]["count"]
    assert sum(event["area"] for event in events) == hot.sum()


def test_a_stalled_line_arrives_late_and_a_paced_loop_drops_it() -> None:
    """The stall fault stamps the line stall_s before it is delivered: delivered on time by the
    clock, it is stall_s late, so a loop allowing 30 ms drops it (it used to stamp the line 50 ms
    in the future: early, never late, so a paced stream never saw a stall)."""
    from edge_had.stream.sources import Line

    period = 0.01
    base = [
        Line(line.index, line.index * period, line.pixels)
        for line in synthetic_lines(32, 16, lines=30, seed=7)
    ]
    lines = list(faulty_lines(base, ["stall"], rate=0.2, seed=3))
    stalled = {line.index for line in lines if "stall" in line.meta["faults"]}
    position = {"index": 0}

    def source():
        for line in lines:
            position["index"] = line.index
            yield line

    pipeline = StreamPipeline(32, 16, settings=CausalSettings(warmup_lines=5), budget_s=period)
    results = []
    pipeline.on_result = results.append
    run_stream(source(), pipeline, max_lag_s=3 * period, clock=lambda: position["index"] * period)
    dropped = {r.index for r in results if r.state == "dropped"}
    assert stalled and dropped == stalled


def test_a_stream_numbered_by_a_wrapping_counter_scores_as_the_unwrapped_one(tmp_path) -> None:
    """`stream --counter-bits 8`: the synthetic camera's lines numbered as an 8-bit counter numbers
    them (0-255, 0-255, ...), every fault injected but corrupted counter values (``index``: a
    flipped bit of an 8-bit counter is another corruption than one of a 16-bit counter), reorder
    window 4. Fault seed 0 puts no reordered pair across a wrap (lines are not put back in order
    across one): the score map and every health count equal the stream numbered without a wrap,
    and its 3 wraps are counted."""
    import json

    from edge_had.cli import main

    argv = ["stream", "--source", "synthetic", "--detector", "rx", "--lines", "1000", "--width", "32",
            "--bands", "8", "--faults", ",".join(f for f in FAULTS if f != "index"), "--fault-rate",
            "0.02", "--fault-seed", "0"]  # fmt: skip
    reports = {}
    for bits in (None, 8):
        out = tmp_path / str(bits)
        extra = [] if bits is None else ["--counter-bits", str(bits)]
        assert main([*argv, *extra, "--out", str(out), "--json", str(out / "report.json")]) == 0
        reports[bits] = json.loads((out / "report.json").read_text())
    wrapped, plain = reports[8]["health"], reports[None]["health"]
    assert (wrapped["counter_wraps"], plain["counter_wraps"]) == (3, 0)
    counts = ("lines_scored", "lines_rejected", "missing_indices", "duplicates", "counter_resets", "reasons")
    assert {key: wrapped[key] for key in counts} == {key: plain[key] for key in counts}
    assert plain["missing_indices"] > 0 and plain["duplicates"] > 0 and plain["flags"]["reordered"] > 0
    assert reports[8]["detector"]["counter_bits"] == 8 and reports[None]["detector"]["counter_bits"] is None
    np.testing.assert_array_equal(
        np.load(tmp_path / "8" / "scores.npy"), np.load(tmp_path / "None" / "scores.npy")
    )


def test_counter_numbered_lines_carry_the_counters_value() -> None:
    from edge_had.stream.sources import counter_numbered

    lines = list(counter_numbered(synthetic_lines(4, 3, lines=600, seed=1), 8))
    assert [line.index for line in lines] == [index % 256 for index in range(600)]
    for bits in (None, 7, 65):
        with pytest.raises(ValueError, match="counter_bits"):
            next(counter_numbered(synthetic_lines(4, 3, lines=2), bits))  # type: ignore[arg-type]


def test_a_corrupted_counter_value_flips_one_bit_of_the_counters_width_from_its_own_stream() -> None:
    """``index``: one bit among the counter's ``index_bits`` flipped, recorded in the line's faults;
    drawn from its own random stream, so the other faults of a seed are those drawn without it
    (the seeded runs and records made before it came are reproduced)."""
    source = list(synthetic_lines(4, 3, lines=3000, seed=1))
    others = tuple(name for name in FAULTS if name != "index")
    without = list(faulty_lines(iter(source), others, rate=0.03, seed=5))
    with_index = list(faulty_lines(iter(source), FAULTS, rate=0.03, seed=5, index_bits=8))
    assert [line.meta["faults"] for line in without] == [
        [name for name in line.meta["faults"] if name != "index"] for line in with_index
    ]
    assert len(without) == len(with_index)  # the same lines arrive, in the same order
    flips = [
        a.index ^ b.index for a, b in zip(without, with_index, strict=True) if "index" in b.meta["faults"]
    ]
    assert 40 < len(flips) < 140 and set(flips) <= {1 << bit for bit in range(8)}
    assert all(
        a.index == b.index
        for a, b in zip(without, with_index, strict=True)
        if "index" not in b.meta["faults"]
    )
