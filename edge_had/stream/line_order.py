"""Where each line's index puts it in the stream: the rules of the line loop's ordering.

:class:`LineOrder` takes the indices of the lines :class:`~edge_had.stream.pipeline.StreamPipeline`
is given (pushed or dropped) and says where each goes - into a row now, held in the reorder
window or as a leap ahead, released in order later, or rejected with a reason - and counts the
missing indices, the duplicates and the counter restarts. It knows nothing of pixels or scores:
what it holds for a line is the pipeline's (its pixels, result and arrival time), handed back
when the line's turn comes, and the pipeline processes what it releases in the order given.

The index counts lines (the line after ``i`` is ``i + 1``; a gap is counted as missing lines,
and the reorder window waits for it): a camera that stamps its lines with a clock tick passes the
tick as the timestamp and numbers the lines itself (``enumerate``), or every line would count as
a gap or an implausible jump.

Reorder window. With ``reorder_window = R > 0`` a line that arrives after a later one is held (up to
R lines wait for a missing index) and processed in order with the flag ``reordered``; only a line
older than everything already released is rejected. The stream's first index is not known in
advance, so its first lines wait until R + 1 have arrived (they are in the statistics' warm-up
anyway); meanwhile a line more than R + 1 below the newest is too late as well. A line rejected for
its shape or values, or dropped, still fills its place in the window (nothing to wait for). Lines
held when the band count changes, or when the counter restarts, are released first
(:meth:`LineOrder.release_all`).

Gaps. Gaps in the indices are counted as ``missing_indices`` (an index that arrives after all, too
late and rejected, is not missing: the latest :data:`GIVEN_UP_MEMORY` given up are remembered);
repeated ones as ``duplicates``.

Leaps ahead. A line whose index leaps ahead further than the reorder window explains (more than
``reorder_window + 1`` past the newest index; without a window any gap) is not trusted until the
next line confirms it: it is held - not scored into a row, its ``push`` returns ``pending``. If
the next line moves forward from it (at its index, within the reorder window below it, or past
it by up to :data:`LEAP_TRUST_LINES`: lines were lost, a USB hiccup or a burst, or the counter
really jumped) it is taken then, one line late, the indices it leapt over missing, and the next
line is judged in turn (a leap itself is held in its turn; a resend of the held line is a
duplicate). If the next line goes back to the old sequence (up to ``reorder_window + 1`` past the
newest before the leap), lands between the two or leaps far past it, the held line is rejected as
an ``implausible index jump`` and the stream keeps its place (a corrupted counter value, one
flipped bit: it must neither put its line in another line's row nor get the lines after it
rejected as out of order; its index is not counted missing if the stream passes it later); a
next line between the two is then itself a leap from the old newest, held. A held leap at the
stream's end is taken if it leapt up to :data:`LEAP_TRUST_LINES`, else rejected. Without a
reorder window, a line lost next to a reordered pair can so cost one more line (the reordered
line leaps over the lost one). The stream's very first line is held the same way, as a leap from
nowhere (``Leap.newest`` None): nothing precedes it to judge its index by, and a corrupted first
index (512 for 0) took that row - with a window, the real line 512 then a duplicate - or, the next
lines going back near 0, started a counter restart that shifted every later row. Its line is
scored one line late; a one-line stream's is taken at its end. A resend of a line processed
lately, arriving while a leap is held, says nothing of the leap: it is rejected as a duplicate and
the leap waits for the line after it.

Going back. A line going back (an index not past the newest processed) is rejected: a
``duplicate index`` when that index was processed lately (the last ``4 x reorder_window + 16``)
or is held in the window, else an ``out-of-order index`` - a line too late or a stale resend, too
old to tell which (one given up as missing is not missing after all).

Counter restarts. A counter that restarts (an SDK reconnect, a counter that wraps) goes back too,
and is followed only on evidence: the line went back to an index near 0 (at most
:data:`COUNTER_RESTART_MAX_INDEX`: a counter starts again at 0 or 1, its first lines perhaps lost)
and the next line continues from it - the first is lost - or
:data:`COUNTER_RESTART_CONFIRM_LINES` consecutive lines continued from another index - those are
lost (a resend of old lines is shorter; a counter restarted elsewhere must not get every later
line rejected until it passes its old maximum); a line then below the restarted run's first index
is out of order (it has no row of the new segment). Lines processed lately are never a restart (a
resent pair is two duplicates). One case stays ambiguous: a resend of the stream's first lines
(indices up to 16) older than the lines remembered is taken for a restart. A restart followed is
``counter_resets`` in health; indices then repeat earlier ones, so each line carries its counter
``segment`` and a ``row`` along track that no other line has (its index shifted past the rows
before the restart: :class:`~edge_had.stream.pipeline.LineResult`; score maps and events are
keyed by it).

Counter wraps. A sensor whose line counter has a known width (``counter_bits``: a 16-bit frame
counter wraps every 65536 lines, 3.3 minutes at 330 Hz) wraps without losing a line: a line whose
index is near 0 (at most :data:`COUNTER_RESTART_MAX_INDEX`) while the newest index is that close to
the counter's last value (2^bits - 1) is the next line - the indices between, on either side of the
wrap, are missing - and needs no next line to confirm it when it is at most ``reorder_window + 1``
steps past the newest over the wrap; further, it is a leap over the wrap, held as any leap (a
review: one flipped bit, 8 for the 0 after 255, was taken at once and every later row shifted by 8).
The stream then counts a ``counter_wraps`` (not a restart) and starts a segment whose rows continue
those before as if the counter had not wrapped (a period past the last segment's). A counter that
wraps to 1, not 0 (``counter_start=1``: GigE Vision 1.x block IDs skip 0, so 65535 is followed by
1), has a period of 2^bits - 1: its wrap loses no index either (with ``counter_start=0`` the 0 it
never sends would be counted missing, and leave an empty row, at every wrap). A line that leapt to
the counter's end is confirmed by the wrap after it. More lines lost over the wrap (up to
:data:`LEAP_TRUST_LINES`, and less than half the counter's period) make the next line a leap over
the wrap, held like any leap until the line after it confirms it - then the wrap is followed and the
lines over it are missing (a leap refused before the wrap is not missing when the next pass gives it
up: its line arrived) - or not (a corrupted value near 0 at the counter's end: rejected, the stream
keeps its place; a counter reset there is taken for such a wrap, its rows a period on). Lines are
not put back in order across a wrap: a line of the old counter pass arriving after the wrap is
rejected (a duplicate when it was processed lately, else out of order) - with a counter of known
width an index more than half its period ahead of the newest is behind it, never a leap. Without
``counter_bits`` a wrap is a restart: followed when the next line continues it, its first line lost.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

#: The latest indices given up as missing that are remembered, so one arriving after all (too
#: late, rejected) is not counted missing as well.
GIVEN_UP_MEMORY = 256
#: A restarted line counter starts again at 0 (or 1): going back to an index up to this one (its
#: first lines may have been lost), continued by the next line, is a restart.
COUNTER_RESTART_MAX_INDEX = 16
#: Going back to any other index is a stale resend or a late line, unless this many consecutive
#: lines continue from it (a counter restarted elsewhere; a resend of old lines is shorter).
COUNTER_RESTART_CONFIRM_LINES = 64
#: A line held for leaping ahead is confirmed by a next line that moves forward from it by up to
#: this many lines (two leaps in a row further apart are taken for corrupted counter values); the
#: stream's last line is taken if it leapt up to this many lines (else rejected).
LEAP_TRUST_LINES = 1000

#: The widths a line counter may be given (``counter_bits``): a period of 256 lines and more.
COUNTER_BITS = range(8, 65)
#: The values a line counter of known width may start (and wrap) at (``counter_start``): 0, or 1
#: for a counter that skips 0 (GigE Vision 1.x block IDs: 1 to 65535, then 1).
COUNTER_STARTS = (0, 1)


def remembered_lines(reorder_window: int) -> int:
    """How many of the latest indices processed a stream remembers (duplicates are told by them)."""
    return 4 * reorder_window + 16


def _whole_number_in(value: object, allowed: range | tuple[int, ...]) -> bool:
    """Whether ``value`` is an int (not a bool) among ``allowed``."""
    return isinstance(value, int) and not isinstance(value, bool) and value in allowed


def checked_counter_bits(
    counter_bits: int | None, reorder_window: int = 0, counter_start: int = 0
) -> int | None:
    """``counter_bits`` (the width of the sensor's line counter, None: not known), or ValueError -
    also for a counter too narrow for the reorder window (the latest indices remembered must stay
    far from its period, or a resend from the pass before and a new line would be one index), and
    for a ``counter_start`` (the value it wraps to) not in :data:`COUNTER_STARTS` or given without
    a width."""
    if not _whole_number_in(counter_start, COUNTER_STARTS):
        raise ValueError(
            f"counter_start must be 0 or 1 (the value the counter wraps to), got {counter_start!r}"
        )
    if counter_bits is None:
        if counter_start != 0:
            raise ValueError("counter_start needs counter_bits: a counter wraps to it only at a known width")
        return None
    if not _whole_number_in(counter_bits, COUNTER_BITS):
        raise ValueError(
            f"counter_bits must be a whole number of bits from 8 to 64 (or None), got {counter_bits!r}"
        )
    least = 8 * remembered_lines(reorder_window)
    if 2**counter_bits < least:
        raise ValueError(
            f"counter_bits {counter_bits} is too few for a reorder window of {reorder_window} lines: "
            f"the counter must count at least {least} lines before it wraps"
        )
    return counter_bits


#: What the caller holds for a line (the pipeline: its pixels, result and arrival).
Line = TypeVar("Line")


class LineCounts(Protocol):
    """Where the order counts (the pipeline's health)."""

    missing_indices: int
    duplicates: int
    counter_resets: int
    counter_wraps: int


@dataclass
class Release(Generic[Line]):
    """Held lines whose turn has come, in index order (those that arrived rejected or dropped are
    left out), and how many missing indices were given up on to release them."""

    lines: list[Line] = field(default_factory=list)
    given_up: int = 0


@dataclass
class Entry(Generic[Line]):
    """A line's index taken into the stream (:meth:`LineOrder.enter`): ``problem``, why it is
    rejected (None: it is the stream's, :meth:`LineOrder.place` gives its row), and whether it is
    ``reordered`` (it came after a later line). ``released``: held lines a counter restart
    released first (process them before this line)."""

    problem: str | None
    released: Release[Line]
    reordered: bool = False


@dataclass
class Leap(Generic[Line]):
    """A line whose index leapt ahead, held (given no row) until the next line says whether the
    leap was real."""

    index: int
    newest: int | None  # the stream's newest index when it leapt (None: the stream's first line)
    line: Line


class LineOrder(Generic[Line]):
    """The ordering rules (the module docstring) for one stream, with a reorder window of
    ``reorder_window`` lines (0: none); ``counts`` gets the missing, duplicate and
    counter-restart tallies. For each line pushed or dropped the caller first settles the line
    that leapt before it, if any (:meth:`settle_leap`: taken - as below - or rejected); then a
    line that :meth:`leaps` is held (:meth:`hold_leap`), any other one is :meth:`enter`-ed (taken
    into the stream - its row is :meth:`place`'s - or rejected with a reason) and, with a window,
    held until its turn (:meth:`hold`). At the stream's end: :meth:`end_leap`, then
    :meth:`release_all`. Every :class:`Release` returned is the caller's to process at once, in
    order."""

    def __init__(
        self, reorder_window: int, counts: LineCounts, counter_bits: int | None = None, counter_start: int = 0
    ) -> None:
        checked_counter_bits(counter_bits, reorder_window, counter_start)
        self.reorder_window = reorder_window
        self.counts = counts
        #: the line counter's first and last values and its period (the values it takes: 2^bits
        #: - start); None when its width is not known
        self.counter_start = counter_start
        self.counter_last = None if counter_bits is None else 2**counter_bits - 1
        self.counter_period = None if self.counter_last is None else self.counter_last + 1 - counter_start
        self._last_index: int | None = None  # the newest index processed (released)
        self._held: dict[int, Line | None] = {}  # the reorder window; None: arrived, rejected or dropped
        self._released: deque[int] = deque(maxlen=remembered_lines(reorder_window))  # processed lately
        self._max_seen = -(2**62)
        self._given_up: deque[int] = deque(maxlen=GIVEN_UP_MEMORY)  # see _give_up
        self._given_up_before_wrap: set[int] = set()  # the pass before's, at a counter's wrap
        # the line that leapt ahead, held until the next line confirms the leap (or not)
        self._leap: Leap[Line] | None = None
        # indices of the latest lines rejected for a leap the next line did not confirm: the line
        # arrived, so its index is no gap (not missing) if the stream passes it later
        self._refused_leaps: deque[int] = deque(maxlen=GIVEN_UP_MEMORY)
        # the same for leaps over the counter's wrap: indices of its next pass, kept until it wraps
        self._refused_over_wrap: deque[int] = deque(maxlen=GIVEN_UP_MEMORY)
        # (first index, lines) of the consecutive lines just refused for going back, if any
        self._back_run: tuple[int, int] | None = None
        self._started = False  # whether any line entered: the first line's index waits for the next
        # a held leap across a counter's wrap that the next line confirmed: entered, it is the wrap
        self._confirmed_wrap: int | None = None
        self._segment = 0  # counter restarts followed
        self._row_offset = 0  # row - index in this segment
        self._segment_first: int | None = None  # a restarted counter's first index (its first row)

    # ------------------------------------------------------------------ leaps ahead

    def _newest(self) -> int | None:
        """The newest index the stream has taken (None before its first line, or a restart's)."""
        if self.reorder_window == 0:
            return self._last_index
        started = self._last_index is not None or bool(self._held)
        return self._max_seen if started else None

    def newest_index(self) -> int | None:
        """The newest index the stream has taken in its counter's pass (None before any)."""
        return self._newest()

    def leaps(self, index: int) -> bool:
        """Whether ``index`` leaps further ahead than the reorder window explains (more than
        ``reorder_window + 1`` past the newest index): a lost stretch of lines, or a corrupted
        counter value - the next line tells which (:meth:`settle_leap`)."""
        newest = self._newest()
        if newest is None:  # the stream's first line: its index is trusted once the next confirms it
            return not self._started
        if self._leaps_across_wrap(newest, index):
            return True
        return index > newest + self.reorder_window + 1 and not self._behind(index)

    def lines_ahead(self, newest: int, index: int) -> int:
        """How many steps forward ``index`` is from ``newest`` (1: the next line), across the
        counter's wrap where ``index`` is a leap over it (:meth:`leaps`); else ``index - newest``."""
        steps = self._across_wrap(newest, index)
        return index - newest if steps is None else steps

    def _across_wrap(self, newest: int, index: int) -> int | None:
        """Steps forward from ``newest`` to ``index`` over the wrap of a counter of known width, if
        ``index`` is behind ``newest`` by its value but ahead that way by at most
        :data:`LEAP_TRUST_LINES` and less than half the counter's period (the end of one pass,
        the start of the next; a line a little behind, a resend, is going back); else None."""
        last, period = self.counter_last, self.counter_period
        if last is None or period is None or index >= newest:
            return None
        steps = (index - self.counter_start) + (last - newest) + 1
        return steps if steps <= LEAP_TRUST_LINES and steps < period // 2 else None

    def _leaps_across_wrap(self, newest: int, index: int) -> bool:
        """A line over the wrap further ahead than the reorder window explains (more than
        ``reorder_window + 1`` steps, as a leap within a pass): held as a leap, which the next
        line confirms or not. A burst of lost lines over the wrap (a review: 26 lines lost over a
        16-bit wrap lost 63 more, counted none missing and shifted every later row), or one
        corrupted value near 0 just after it (a review: 8 for 0 shifted every later row by 8)."""
        steps = self._across_wrap(newest, index)
        if steps is None:
            return False
        return steps > self.reorder_window + 1 or not self._wraps_after(newest, index)

    def hold_leap(self, index: int, line: Line) -> None:
        """Hold a leaping line until the next line arrives. It breaks a run of lines going back
        (:meth:`_restarted`)."""
        self._back_run = None
        self._leap = Leap(index, self._newest(), line)

    def settle_leap(self, index: int) -> tuple[Leap[Line], str | None] | None:
        """A line ``index`` arrived after a line that leapt ahead: that line and, if it is
        rejected, why (None when no leap was held). If ``index`` moves forward from it (at it,
        within the reorder window below it, or past it, by up to :data:`LEAP_TRUST_LINES`), the
        leap was real and the stream follows it: the caller takes the held line now, one line
        late, its gap missing, and judges ``index`` in turn (a leap itself is held; a resend of
        the held line is a duplicate). Otherwise - it returns to the old sequence, lands between
        the two, or leaps far past the held line - the held line is rejected as an implausible
        index and the stream keeps its place (the line is not missing if the stream passes its
        index later: it arrived, with a bad counter value); ``index`` is then judged against the
        old newest (between the two: a leap, held). A resend of a line processed lately (or held
        in the window) says nothing of the leap: it stays held for the line after, and None is
        returned (a fuzzing review: 252, 2, 252 over an 8-bit wrap - 0 and 1 lost, 252 resent -
        rejected the genuine 2; within a pass 102, 105, 102, 106 rejected 105)."""
        leap = self._leap
        if leap is None:
            return None
        if index != leap.index and self._processed_lately(index):
            return None  # a duplicate: rejected as one when judged
        self._leap = None
        if self._moves_forward_from(leap, index):
            self._confirm_wrap(leap)
            return leap, None
        if self._across_wrap(leap.index, index) is not None:  # (_wraps_after's case among them)
            return leap, None  # it leapt toward the counter's end, which then wrapped
        # (a line of the pass before, arriving late, never leaps: _behind)
        return leap, self._refuse(leap, f"the next line, {index}, did not move forward from it")

    def _seen(self, index: int) -> bool:
        """Whether ``index`` was processed lately or is held in the reorder window."""
        return index in self._held or index in self._released

    def _processed_lately(self, index: int) -> bool:
        """Whether ``index`` is that of a line processed lately or held in the window, not past
        the newest (a resend; after a wrap, one of the pass before)."""
        if not self._seen(index):
            return False
        newest = self._newest()
        return newest is not None and (index <= newest or self._behind(index))

    def end_leap(self) -> tuple[Leap[Line], str | None] | None:
        """The stream ended: the leap held, if any, and why it is rejected (None: no line came to
        confirm it, but it leapt little - taken)."""
        leap, self._leap = self._leap, None
        if leap is None:
            return None
        if leap.newest is None or self.lines_ahead(leap.newest, leap.index) <= LEAP_TRUST_LINES:
            self._confirm_wrap(leap)  # (newest None: a one-line stream)
            return leap, None
        return leap, self._refuse(leap, "the stream ended before a line could confirm it")

    def _moves_forward_from(self, leap: Leap[Line], index: int) -> bool:
        """Whether ``index`` moves forward from the held leap: at it, within the reorder window
        below it, or past it by up to :data:`LEAP_TRUST_LINES` - for a leap over the counter's
        wrap, counted over the wrap from the newest line before it, so that a line carrying on
        the old pass does not confirm a corrupted near-0 value (a fuzzing review: it did, and
        the lines after it were rejected)."""
        window = self.reorder_window
        crossed = self._steps_over_wrap(leap)
        if crossed is None or leap.newest is None:
            return leap.index - window - 1 < index <= leap.index + LEAP_TRUST_LINES
        steps = self._across_wrap(leap.newest, index)
        return steps is not None and crossed - window - 1 < steps <= crossed + LEAP_TRUST_LINES

    def _steps_over_wrap(self, leap: Leap[Line]) -> int | None:
        """The steps of a leap over the counter's wrap from the newest line before it (None: it
        did not cross the wrap, or it is the stream's first line)."""
        return None if leap.newest is None else self._across_wrap(leap.newest, leap.index)

    def _confirm_wrap(self, leap: Leap[Line]) -> None:
        """A leap taken: if it crossed the counter's wrap, entering it follows the wrap."""
        self._confirmed_wrap = leap.index if self._steps_over_wrap(leap) is not None else None

    def _refuse(self, leap: Leap[Line], why: str) -> str:
        refused = self._refused_leaps if self._steps_over_wrap(leap) is None else self._refused_over_wrap
        if leap.index not in refused:
            refused.append(leap.index)
        if leap.newest is None:
            return f"implausible index (the stream's first line, {leap.index}; {why})"
        return f"implausible index jump (from {leap.newest} to {leap.index}; {why})"

    # ------------------------------------------------------------------ lines taken into the stream

    def enter(self, index: int) -> Entry[Line]:
        """A line that does not leap ahead (or whose leap the next line confirmed): its place in
        the stream, or why it has none. Without a reorder window it is the stream's newest line
        now; with one, the caller holds it (:meth:`hold`) - or, rejected for its shape or values
        after all, holds nothing in its place."""
        back_run, self._back_run = self._back_run, None
        self._started = True
        wrapped = None
        confirmed_wrap, self._confirmed_wrap = self._confirmed_wrap == index, None
        if confirmed_wrap or (not self._seen(index) and self._wraps(index)):
            wrapped = self._follow_wrap()  # the line is then the first of the counter's new pass
        if self.reorder_window == 0:
            problem, released = self._check_index(index, back_run)
        else:
            problem, released = self._reorder_problem(index, back_run)
        entry = Entry(problem, released if wrapped is None else wrapped)
        if problem is None and self.reorder_window > 0:
            entry.reordered = index < self._max_seen
            self._max_seen = max(self._max_seen, index)
        return entry

    def place(self, index: int) -> tuple[int, int]:
        """The counter segment of a line the stream takes now, and its row along track."""
        return self._segment, index + self._row_offset

    def hold(self, index: int, line: Line | None) -> Release[Line]:
        """Hold an entered line in the reorder window (None: it arrived, rejected or dropped -
        nothing to wait for), unless the window has since released past it (every held line
        released for a new band count); the lines whose turn has come."""
        if self._last_index is not None and index <= self._last_index:
            return Release()
        self._held[index] = line
        return self._release(force=False)

    def release_all(self) -> Release[Line]:
        """Every held line, giving up on the indices still missing between them (the band count
        changed, or the stream ended)."""
        return self._release(force=True)

    def _check_index(self, index: int, back_run: tuple[int, int] | None) -> tuple[str | None, Release[Line]]:
        """Without a reorder window."""
        last = self._last_index
        released: Release[Line] = Release()
        if last is not None and (index <= last or self._behind(index)):
            seen = index in self._released  # processed lately (the last one included)
            restart = self._restarted(index, back_run, seen)
            if restart is None:
                if seen:
                    self.counts.duplicates += 1
                    return "duplicate index", Release()
                return f"out-of-order index (after {last})", Release()
            released = restart
        self._advance_to(index)
        return None, released

    def _advance_to(self, index: int) -> None:
        """Without a reorder window: ``index`` is the stream's newest line; those between the
        newest before and it are given up."""
        if self._last_index is not None and index > self._last_index + 1:
            self._give_up(self._last_index + 1, index)
        self._last_index = index
        self._released.append(index)  # (a resend of it is a duplicate: _restarted)

    def _reorder_problem(
        self, index: int, back_run: tuple[int, int] | None
    ) -> tuple[str | None, Release[Line]]:
        """Why ``index`` cannot enter the reorder window (seen before, or too late), or None."""
        seen = self._seen(index)
        # (behind: also before the window released a line, at the start or after a restart; there,
        # a line more than the window below the newest too - a fuzzing review: 1000, 1011, 100 took
        # 100 and counted 900 lines missing)
        if self._last_index is not None:
            late = self._behind(index) or index <= self._last_index
        else:
            late = self._behind(index) or (
                bool(self._held) and index < self._max_seen - self.reorder_window - 1
            )
        # before a restarted counter's first line: its row would be the segment before's
        early = self._segment_first is not None and index < self._segment_first
        if not (seen or late or early):
            return None, Release()
        released = self._restarted(index, back_run, seen)
        if released is not None:
            return None, released
        if seen:
            self.counts.duplicates += 1
            return "duplicate index", Release()
        if late:
            after = self._last_index if self._last_index is not None else self._newest()
            return f"out-of-order index (beyond the reorder window, after {after})", Release()
        return (
            f"out-of-order index (before the restarted counter's first line, {self._segment_first})",
            Release(),
        )

    def _release(self, force: bool) -> Release[Line]:
        """The held lines whose turn has come: the next index's, and while more than
        ``reorder_window`` are held (or ``force``), the lowest index's, the indices between given
        up."""
        out: Release[Line] = Release()
        while self._held:
            following = None if self._last_index is None else self._last_index + 1
            if following not in self._held:
                if not force and len(self._held) <= self.reorder_window:
                    break
                following = min(self._held)  # give up waiting: the indices between are missing
                if self._last_index is not None:  # (before the first line: none are)
                    out.given_up += following - self._last_index - 1
                    self._give_up(self._last_index + 1, following)
            line = self._held.pop(following)
            self._last_index = following
            self._released.append(following)
            if line is not None:
                out.lines.append(line)
        return out

    def _give_up(self, first: int, stop: int) -> None:
        """Indices ``first`` to ``stop - 1`` will not be processed: missing, unless one arrives
        after all (:meth:`_restarted`)."""
        # lines rejected for a leap the next line did not confirm (one index may have come twice)
        arrived = {index for index in self._refused_leaps if first <= index < stop}
        for index in arrived:
            self._refused_leaps.remove(index)
        self.counts.missing_indices += stop - first - len(arrived)
        remembered = range(max(first, stop - GIVEN_UP_MEMORY), stop)
        # the first indices of a counter's pass given up at its wrap are where a restarted counter
        # begins: not remembered as late lines, or a restart soon after a burst lost over the wrap
        # went unseen, its lines rejected as late (a fuzzing review: 7,293 lines lost in one feed)
        after_wrap = self.counter_last is not None and first == self.counter_start
        forgotten = self.counter_start + COUNTER_RESTART_MAX_INDEX if after_wrap else first - 1
        self._given_up.extend(index for index in remembered if index not in arrived and index > forgotten)

    # ------------------------------------------------------------------ counter restarts

    def _restarted(self, index: int, back_run: tuple[int, int] | None, seen: bool) -> Release[Line] | None:
        """Whether a line whose index is not past the stream's restarts the line counter (the rule
        is the module docstring's): None if not, else the lines held in the reorder window, which
        go first. ``back_run``: (first index, lines) of the consecutive lines just before that
        went back; ``seen``: the index was processed lately or is held. An index given up on is a
        line too late (rejected, not missing after all: the latest :data:`GIVEN_UP_MEMORY`). On
        a restart the stream follows the counter from this line, as after a leap ahead (the lines
        of the run before are lost), in a new segment whose rows continue past the rows before.
        Else the line is rejected, and the run it continues kept in case the next line continues
        it."""
        if index in self._given_up:
            self._given_up.remove(index)
            self.counts.missing_indices -= 1
            return None
        if seen:  # a resend of a line processed lately, whatever follows
            return None
        if self._behind(index) and index in self._given_up_before_wrap:  # late from the pass before
            self._given_up_before_wrap.discard(index)
            self.counts.missing_indices -= 1
            return None
        continues = back_run is not None and index == back_run[0] + back_run[1]
        first, lines = (back_run[0], back_run[1] + 1) if back_run is not None and continues else (index, 1)
        near_zero = first <= COUNTER_RESTART_MAX_INDEX and lines >= 2
        if not near_zero and lines < COUNTER_RESTART_CONFIRM_LINES:
            self._back_run = (first, lines)
            return None
        self.counts.counter_resets += 1
        released = self._release(force=True)
        newest_row = self._row_offset + (self._last_index if self._last_index is not None else -1)
        self._segment += 1
        self._row_offset = newest_row + 1 - first  # the run's first line takes the next row
        self._segment_first = first  # a line below it has no row of this segment
        self._last_index, self._max_seen = None, -(2**62)
        self._released.clear()
        self._given_up.clear()
        self._given_up_before_wrap.clear()
        self._refused_leaps.clear()
        self._refused_over_wrap.clear()
        return released

    def _behind(self, index: int) -> bool:
        """Whether ``index``, above the newest, is behind it on a counter of known width: more than
        half the counter's period ahead (a line from before the wrap, arriving after it)."""
        newest = self._newest()
        period = self.counter_period
        return period is not None and newest is not None and index - newest > period // 2

    def _wraps(self, index: int) -> bool:
        """Whether ``index`` is a counter of known width wrapping past its last value."""
        newest = self._newest()
        return newest is not None and self._wraps_after(newest, index)

    def _wraps_after(self, newest: int, index: int) -> bool:
        """Whether ``index`` after ``newest`` is the counter (of known width) wrapping: both
        within :data:`COUNTER_RESTART_MAX_INDEX` of the wrap."""
        last = self.counter_last
        return (
            last is not None
            and index <= self.counter_start + COUNTER_RESTART_MAX_INDEX
            and newest >= last - COUNTER_RESTART_MAX_INDEX
        )

    def _follow_wrap(self) -> Release[Line]:
        """The counter wrapped: the lines held go first, the indices up to the counter's last
        value are missing, and the stream goes on from the index before its first value (as if
        the last value had come there) in a new segment whose rows continue the old one's."""
        period, last = self.counter_period, self.counter_last
        assert period is not None and last is not None
        self.counts.counter_wraps += 1
        released = self._release(force=True)
        if self._last_index is not None and self._last_index < last:
            released.given_up += last - self._last_index
            self._give_up(self._last_index + 1, last + 1)
        self._segment += 1
        self._row_offset += period
        self._last_index = self._max_seen = self.counter_start - 1
        self._segment_first = None
        # the pass before's latest indices stay in _released: a resend of one is a duplicate; one
        # given up that arrives after all is not missing (only a line behind is looked up there)
        self._given_up_before_wrap = set(self._given_up)
        self._given_up.clear()
        # a leap over the wrap refused before it came arrived in this pass (a review: 255, 1, 0, 2
        # counted 1 missing too, once refused and once given up)
        self._refused_leaps = self._refused_over_wrap
        self._refused_over_wrap = deque(maxlen=GIVEN_UP_MEMORY)
        return released
