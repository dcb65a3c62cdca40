"""The line order on indices alone (no pixels, no scores): what it holds, releases, rejects and
counts. The rules are :mod:`edge_had.stream.line_order`'s docstring; the pipeline's tests
(test_stream_integration.py) drive them with lines."""

from __future__ import annotations

from types import SimpleNamespace

from edge_had.stream.line_order import LineOrder


def new_order(window: int) -> tuple[LineOrder[str], SimpleNamespace]:
    counts = SimpleNamespace(missing_indices=0, duplicates=0, counter_resets=0)
    return LineOrder(window, counts), counts


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
