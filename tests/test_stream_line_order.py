"""The line order on indices alone (no pixels, no scores): what it holds, releases, rejects and
counts. The rules are :mod:`edge_had.stream.line_order`'s docstring; the pipeline's tests
(test_stream_integration.py) drive them with lines."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from edge_had.stream.line_order import Leap, LineOrder, checked_counter_bits


def new_order(
    window: int, counter_bits: int | None = None, counter_start: int = 0
) -> tuple[LineOrder[str], SimpleNamespace]:
    counts = SimpleNamespace(missing_indices=0, duplicates=0, counter_resets=0, counter_wraps=0)
    return LineOrder(window, counts, counter_bits, counter_start), counts


def test_the_window_holds_lines_until_their_turn_and_gives_up_on_a_gap() -> None:
    order, counts = new_order(1)
    assert order.enter(0).problem is None and order.hold(0, "line 0").lines == []  # first index unknown
    assert not order.leaps(2) and order.enter(2).problem is None
    assert order.hold(2, "line 2").lines == ["line 0"]
    entry = order.enter(3)
    assert entry.problem is None and not entry.reordered
    released = order.hold(3, "line 3")
    assert released.lines == ["line 2", "line 3"] and released.given_up == 1 and counts.missing_indices == 1
    assert order.enter(1).problem == "out-of-order index (beyond the reorder window, after 3)"
    assert counts.missing_indices == 0  # it arrived after all: too late, not missing
    assert order.enter(3).problem == "duplicate index" and counts.duplicates == 1


def test_a_reordered_pair_is_released_in_order_and_flagged() -> None:
    order, _ = new_order(2)
    for index in (0, 1):
        order.enter(index)
        order.hold(index, f"line {index}")
    order.enter(3)
    assert order.hold(3, "line 3").lines == ["line 0", "line 1"]  # 2 may still come
    entry = order.enter(2)
    assert entry.reordered and order.hold(2, "line 2").lines == ["line 2", "line 3"]
    assert order.release_all().lines == []


def test_a_leap_is_held_until_the_next_line_confirms_it_or_not() -> None:
    order, counts = new_order(0)
    for index in (0, 1):
        assert order.enter(index).problem is None
    assert order.leaps(500)
    order.hold_leap(500, "line 500")
    leap, refusal = order.settle_leap(501)  # the next line moves on from it: taken
    assert (leap.index, leap.newest, leap.line, refusal) == (500, 1, "line 500", None)
    assert order.enter(500).problem is None and counts.missing_indices == 498
    order.hold_leap(2000, "line 2000")  # a corrupted counter value: the next line goes back
    leap, refusal = order.settle_leap(501)
    assert (
        refusal
        == "implausible index jump (from 500 to 2000; the next line, 501, did not move forward from it)"
    )
    assert order.settle_leap(502) is None and order.end_leap() is None


def test_a_counter_restart_near_0_is_followed_in_a_new_segment() -> None:
    order, counts = new_order(0)
    for index in range(30):
        order.enter(index)
    assert order.place(29) == (0, 29)
    assert order.enter(0).problem == "out-of-order index (after 29)"  # a stale line, or a restart?
    assert order.enter(1).problem is None and counts.counter_resets == 1  # the next line continues it
    assert order.place(1) == (1, 31)  # the lost line 0 keeps row 30


def test_a_leap_is_trusted_up_to_leap_trust_lines_past_it_and_no_further() -> None:
    # the docstring: the next line confirms a leap moving forward from it "by up to
    # LEAP_TRUST_LINES" (1000); at the stream's end a leap of up to 1000 lines is taken
    order, _ = new_order(0)
    for index in range(10):
        order.enter(index)
    order.hold_leap(2000, "line 2000")
    assert order.settle_leap(3000)[1] is None  # exactly 1000 past it: the leap was real
    order.hold_leap(3000, "line 3000")
    assert order.settle_leap(4001)[1] is not None  # 1001 past it: a corrupted counter value

    order, _ = new_order(0)
    for index in range(10):
        order.enter(index)
    order.hold_leap(1009, "line 1009")  # 1000 past the newest, 9
    assert order.end_leap()[1] is None
    order.hold_leap(1010, "line 1010")  # 1001 past it
    assert order.end_leap()[1] == (
        "implausible index jump (from 9 to 1010; the stream ended before a line could confirm it)"
    )


def test_a_leap_breaks_a_run_of_lines_going_back() -> None:
    # 63 consecutive lines going back, a leap, then the 64th: no run of 64 (the docstring's
    # "consecutive"), so no counter restart - the line is out of order
    order, counts = new_order(0)
    for index in range(1000, 1100):
        order.enter(index)
    for index in range(500, 563):
        assert order.enter(index).problem == "out-of-order index (after 1099)"
    assert order.leaps(5000)
    order.hold_leap(5000, "line 5000")
    assert order.settle_leap(563)[1] is not None
    assert order.enter(563).problem == "out-of-order index (after 1099)"
    assert counts.counter_resets == 0
    # without the leap the 64th line is a restart
    order, counts = new_order(0)
    for index in range(1000, 1100):
        order.enter(index)
    for index in range(500, 564):
        order.enter(index)
    assert counts.counter_resets == 1


def test_indices_given_up_before_a_counter_restart_are_forgotten() -> None:
    # index 10 is given up (missing) in the first segment; after a restart a line 10 going back
    # is a stale line of the new segment, not the old gap's line arriving after all
    order, counts = new_order(0)
    for index in [*range(10), *range(11, 100)]:
        order.enter(index)
    assert counts.missing_indices == 1
    for index in range(31):  # the restart (0 then 1) and its run to 30
        order.enter(index)
    assert counts.counter_resets == 1
    assert order.enter(10).problem == "out-of-order index (after 30)"
    assert counts.missing_indices == 1


def test_a_16_bit_counter_wraps_without_losing_a_line() -> None:
    """After 65535 comes 0: the next line, its row the next row, no restart, nothing missing.
    Without the counter's width the same wrap is a restart that loses its first line."""
    order, counts = new_order(0, counter_bits=16)
    for index in range(65530, 65536):
        assert order.enter(index).problem is None
    for index, row in ((0, 65536), (1, 65537), (2, 65538)):
        assert not order.leaps(index) and order.enter(index).problem is None
        assert order.place(index) == (1, row)
    assert (counts.counter_wraps, counts.counter_resets, counts.missing_indices) == (1, 0, 0)
    # a line of the old pass arriving now is behind, not a leap ahead (a review: it was held as one,
    # the next old line confirmed it, and the stream wrapped a second time): a resend of one
    # processed lately is a duplicate, another one out of order
    assert not order.leaps(65535) and not order.leaps(40000)
    assert order.enter(65535).problem == "duplicate index" and counts.duplicates == 1
    assert order.enter(40000).problem == "out-of-order index (after 2)"
    assert order.enter(3).problem is None and order.place(3) == (1, 65539) and counts.counter_wraps == 1

    unknown, counts = new_order(0)
    for index in range(65530, 65536):
        unknown.enter(index)
    assert unknown.enter(0).problem == "out-of-order index (after 65535)"  # lost
    assert unknown.enter(1).problem is None and (counts.counter_resets, counts.counter_wraps) == (1, 0)


def test_a_counter_that_skips_0_wraps_to_1_without_a_missing_index() -> None:
    """GigE Vision 1.x block IDs: 65535 is followed by 1. With counter_start=1 that is the next
    line, in the next row (the counter's period is 65535); lines lost on either side of the wrap
    are missing, 0 not among them. With counter_start=0 the same wrap counts 0 missing and leaves
    its row empty."""
    order, counts = new_order(0, counter_bits=16, counter_start=1)
    assert order.counter_period == 2**16 - 1
    for index in range(65530, 65536):
        assert order.enter(index).problem is None
    for index, row in ((1, 65536), (2, 65537)):
        assert not order.leaps(index) and order.enter(index).problem is None
        assert order.place(index) == (1, row)
    assert (counts.counter_wraps, counts.counter_resets, counts.missing_indices) == (1, 0, 0)

    order, counts = new_order(0, counter_bits=16, counter_start=1)
    for index in range(65520, 65534):
        order.enter(index)
    assert order.enter(3).problem is None and order.place(3) == (1, 65538)
    assert counts.missing_indices == 4 and counts.counter_wraps == 1  # 65534, 65535, 1 and 2

    order, counts = new_order(2, counter_bits=16, counter_start=1)  # reordered on either side
    released: list[str] = []
    for index in (65532, 65533, 65535, 65534, 2, 1, 3):
        entry = order.enter(index)
        assert entry.problem is None, index
        released += entry.released.lines + order.hold(index, f"line {index}").lines
    released += order.release_all().lines
    assert released == [f"line {i}" for i in (65532, 65533, 65534, 65535, 1, 2, 3)]
    assert (counts.counter_wraps, counts.missing_indices) == (1, 0) and order.place(3) == (1, 65538)

    order, counts = new_order(0, counter_bits=16)  # the same counter, its start not given
    for index in range(65530, 65536):
        order.enter(index)
    assert order.enter(1).problem is None and order.place(1) == (1, 65537)
    assert (counts.counter_wraps, counts.missing_indices) == (1, 1)


@pytest.mark.parametrize("start", [2, -1, True, 1.0])
def test_a_counter_start_other_than_0_or_1_or_without_a_width_is_refused(start: object) -> None:
    with pytest.raises(ValueError, match="counter_start must be 0 or 1"):
        new_order(0, 16, start)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="counter_start needs counter_bits"):
        new_order(0, None, 1)
    assert checked_counter_bits(16, 0, 1) == 16 and checked_counter_bits(None, 0, 0) is None


def test_lines_lost_on_either_side_of_a_wrap_are_missing() -> None:
    order, counts = new_order(0, counter_bits=16)
    for index in range(65520, 65534):
        order.enter(index)
    assert order.enter(2).problem is None and order.place(2) == (1, 65538)
    assert counts.missing_indices == 4 and counts.counter_wraps == 1  # 65534, 65535, 0 and 1


def test_a_wrap_inside_the_reorder_window_releases_the_old_pass_first() -> None:
    """Window 2: 65534 late behind 65535 is put back in order; at the wrap the held lines go
    first; 0 late behind 1 is put back in order in the new pass."""
    order, counts = new_order(2, counter_bits=16)
    released: list[str] = []
    for index in (65532, 65533, 65535, 65534, 1, 0, 2, 3):
        entry = order.enter(index)
        assert entry.problem is None, index
        released += entry.released.lines
        released += order.hold(index, f"line {index}").lines
    released += order.release_all().lines
    assert released == [f"line {i}" for i in (65532, 65533, 65534, 65535, 0, 1, 2, 3)]
    assert (counts.counter_wraps, counts.missing_indices, counts.counter_resets) == (1, 0, 0)
    assert order.place(3) == (1, 65539)


def test_a_leap_to_the_counters_end_is_confirmed_by_the_wrap() -> None:
    order, counts = new_order(0, counter_bits=16)
    for index in range(65000, 65010):
        order.enter(index)
    assert order.leaps(65535)
    order.hold_leap(65535, "line 65535")
    leap, refusal = order.settle_leap(0)  # the counter wrapped after it: the leap was real
    assert leap.index == 65535 and refusal is None
    assert order.enter(65535).problem is None and order.enter(0).problem is None
    assert order.place(0) == (1, 65536) and counts.missing_indices == 525 and counts.counter_wraps == 1


@pytest.mark.parametrize("window", [0, 4])
def test_a_burst_lost_over_a_wrap_is_a_leap_the_next_line_confirms(window: int) -> None:
    """A review: 26 lines lost over a 16-bit wrap (65530 to 65535, then 0 to 19) - more than the
    wrap taken at once (both sides within 16 lines) - lost 63 more lines, counted none missing and
    shifted every later row (a restart). It is a leap over the wrap now: held, confirmed by the next
    line, the 26 lines missing and the rows those of the unwrapped counter."""
    order, counts = new_order(window, counter_bits=16)
    released: list[str] = []

    def take(index: int) -> None:
        entry = order.enter(index)
        assert entry.problem is None, index
        released.extend(entry.released.lines)
        if window:
            released.extend(order.hold(index, f"line {index}").lines)
        else:
            released.append(f"line {index}")

    for index in range(65500, 65530):
        take(index)
    assert order.leaps(20) and order.lines_ahead(65529, 20) == 27
    order.hold_leap(20, "line 20")
    leap, refusal = order.settle_leap(21)
    assert leap.index == 20 and refusal is None
    take(20)
    assert order.place(20) == (1, 65536 + 20)
    take(21)
    released.extend(order.release_all().lines)
    assert released == [f"line {i}" for i in (*range(65500, 65530), 20, 21)]
    assert (counts.missing_indices, counts.counter_wraps, counts.counter_resets) == (26, 1, 0)


def test_a_corrupted_index_near_0_at_the_counters_end_is_refused_by_the_next_line() -> None:
    """The leap over the wrap is held like any leap: when the next line carries on the old pass,
    the near-0 index was a corrupted counter value, rejected; the stream keeps its place."""
    order, counts = new_order(0, counter_bits=16)
    for index in range(65400, 65410):
        order.enter(index)
    assert order.leaps(300)
    order.hold_leap(300, "line 300")
    leap, refusal = order.settle_leap(65410)
    assert leap.index == 300 and refusal is not None and refusal.startswith("implausible index jump")
    assert order.enter(65410).problem is None and order.place(65410) == (0, 65410)
    assert (counts.missing_indices, counts.counter_wraps) == (0, 0)


@pytest.mark.parametrize("window", [0, 4])
def test_a_wrap_leap_is_confirmed_only_by_a_line_over_the_wrap_too(window: int) -> None:
    """A fuzzing review: an 8-bit counter at 200 getting a corrupted 60 (a leap over the wrap)
    took it when the next line, 201, carried on the old pass - 201 is past 60 - and rejected the
    lines after it. The next line must be over the wrap too, and forward from the leap."""
    order, counts = new_order(window, counter_bits=8)
    for index in range(190, 201):
        assert order.enter(index).problem is None
        if window:
            order.hold(index, f"line {index}")
    assert order.leaps(60)
    order.hold_leap(60, "line 60")
    leap, refusal = order.settle_leap(201)
    assert leap.index == 60 and refusal is not None and refusal.startswith("implausible index jump")
    assert order.enter(201).problem is None and order.place(201) == (0, 201)
    order.release_all()
    assert (counts.missing_indices, counts.counter_wraps) == (0, 0)


def test_a_leap_then_a_leap_over_the_wrap_are_both_followed() -> None:
    """The same fuzzing: 64800, then 65400 (600 lines lost), then 500 (636 lost over the wrap): the
    first leap was refused because 500 is not past 65400 - over the wrap it is. Both are taken
    now, the rows those of the unwrapped counter, the 1234 lines between missing."""
    order, counts = new_order(0, counter_bits=16)
    for index in range(64790, 64801):
        order.enter(index)
    assert order.leaps(65400)
    order.hold_leap(65400, "line 65400")
    assert order.settle_leap(500)[1] is None
    assert order.enter(65400).problem is None and order.place(65400) == (0, 65400)
    assert order.leaps(500)
    order.hold_leap(500, "line 500")
    assert order.settle_leap(501)[1] is None
    assert order.enter(500).problem is None and order.place(500) == (1, 65536 + 500)
    assert (counts.missing_indices, counts.counter_wraps, counts.counter_resets) == (1234, 1, 0)


def test_a_restart_soon_after_a_burst_lost_over_the_wrap_is_followed() -> None:
    """A fuzzing review: after a leap over the wrap to 40, the indices 0-39 were given up and
    remembered as late lines, so a counter restart at 0 right after was never seen - its lines
    rejected as late (7,293 lines lost in one feed). A pass's first indices given up at its wrap
    are not remembered: the restart is followed, its first line lost as any restart's."""
    order, counts = new_order(0, counter_bits=16)
    for index in (65500, 65501):
        order.enter(index)
    order.hold_leap(40, "line 40")
    assert order.settle_leap(41)[1] is None
    for index in (40, 41):
        assert order.enter(index).problem is None
    assert order.enter(0).problem == "out-of-order index (after 41)"  # a restart's first line, lost
    assert order.enter(1).problem is None and counts.counter_resets == 1
    assert order.place(1)[0] == 2 and order.place(2)[1] == order.place(1)[1] + 1


def test_going_back_near_0_far_from_the_counters_end_is_no_wrap() -> None:
    """A 16-bit counter at 30000 going back to 0 is not wrapping: the restart rules apply (the
    next line must continue it), as for a counter of unknown width; so does a 32-bit counter
    at 65535 (a 16-bit wrap's numbers)."""
    for bits, newest in ((16, 30000), (32, 65535)):
        order, counts = new_order(0, counter_bits=bits)
        for index in range(newest - 5, newest + 1):
            order.enter(index)
        assert order.enter(0).problem == f"out-of-order index (after {newest})"
        assert order.enter(1).problem is None and (counts.counter_resets, counts.counter_wraps) == (1, 0)


@pytest.mark.parametrize("bits", [7, 65, 16.0, True, "16"])
def test_a_counter_width_that_is_not_8_to_64_bits_is_refused(bits: object) -> None:
    with pytest.raises(ValueError, match="counter_bits must be a whole number of bits from 8 to 64"):
        checked_counter_bits(bits)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="counter_bits"):
        new_order(0, bits)  # type: ignore[arg-type]
    assert (
        checked_counter_bits(8) == 8 and checked_counter_bits(64) == 64 and checked_counter_bits(None) is None
    )


def test_a_counter_too_narrow_for_the_reorder_windows_memory_is_refused() -> None:
    """The latest indices processed (4 x window + 16) must stay far from the counter's period, or a
    resend of the pass before's line and a new line of the same number would be one index."""
    with pytest.raises(ValueError, match="counter_bits 8 is too few for a reorder window of 5 lines"):
        new_order(5, counter_bits=8)
    assert new_order(4, counter_bits=8)[0].counter_period == 256
    assert new_order(5, counter_bits=9)[0].counter_period == 512


def test_the_first_lines_index_waits_for_the_next_line_to_confirm_it() -> None:
    """A corrupted index on the stream's very first line (512 for 0, one flipped bit) was trusted:
    with a window its line took row 512 and the real line 512 was later a duplicate; without one
    the next lines were a counter restart that shifted every row (a review). The first line is now
    held as a leap from nowhere: taken when the next line moves forward from it, else rejected."""
    order, counts = new_order(0)
    assert order.leaps(512)
    order.hold_leap(512, "line 0")
    leap, refusal = order.settle_leap(1)  # the next line goes back: the first index was wrong
    assert leap.line == "line 0"
    assert (
        refusal
        == "implausible index (the stream's first line, 512; the next line, 1, did not move forward from it)"
    )
    assert order.leaps(1)  # the next line is the first one now, waiting in turn
    order.hold_leap(1, "line 1")
    leap, refusal = order.settle_leap(2)
    assert leap.index == 1 and refusal is None
    for index in (1, 2):
        assert order.enter(index).problem is None and order.place(index) == (0, index)
    assert not order.leaps(3) and (counts.counter_resets, counts.missing_indices) == (0, 0)

    order, _ = new_order(0)  # a one-line stream: its line is taken at the end
    order.hold_leap(7, "only")
    assert order.end_leap() == (Leap(7, None, "only"), None)
