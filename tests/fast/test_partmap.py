"""A fill's parts in-process: the order they are taken in, how far written bytes reach, and what readers see."""

from __future__ import annotations

import asyncio

from hubproxy.cache.fill import Fill
from hubproxy.cache.partmap import PartMap, plan

MIB = 1024 * 1024
SIZE = 10 * MIB + 7


def _map() -> PartMap:
    return PartMap(plan(0, SIZE, 2 * MIB, 4), SIZE)  # five of 2 MiB, then one of 7 bytes


def test_parts_are_taken_in_order_unless_a_reader_waits_for_one() -> None:
    parts = _map()
    assert parts.take().start == 0  # type: ignore[union-attr]
    parts.want(9 * MIB)  # a reader far ahead
    parts.want(9 * MIB + 1)  # asked twice: taken once
    assert [parts.take().start for _ in range(2)] == [8 * MIB, 2 * MIB]  # type: ignore[union-attr]
    parts.want(2 * MIB + 5)  # already taken: nothing changes
    assert [p.start for p in iter(parts.take, None)] == [4 * MIB, 6 * MIB, 10 * MIB]
    assert not parts.untaken()


def test_a_part_taken_for_a_reader_ahead_of_untaken_ones_marks_the_parts_reordered() -> None:
    parts = _map()
    parts.take()
    parts.want(2 * MIB)  # the next part in order anyway: still in order
    assert parts.take().start == 2 * MIB and not parts.reordered  # type: ignore[union-attr]
    parts.want(8 * MIB)  # skips the parts at 4 and 6 MiB
    assert parts.take().start == 8 * MIB and parts.reordered  # type: ignore[union-attr]


def test_written_bytes_reach_across_finished_parts_and_stop_at_a_gap() -> None:
    parts = _map()
    first, second, third = parts.take(), parts.take(), parts.take()
    assert first and second and third
    parts.advance(second, 2 * MIB)  # the second part is complete, ahead of the prefix
    parts.advance(third, MIB)
    assert parts.prefix == 0
    assert parts.extent(2 * MIB + 3) == 5 * MIB  # through the second part and half the third
    assert parts.extent(MIB) == MIB  # nothing written from there yet
    assert parts.extent(7 * MIB) == 7 * MIB
    parts.advance(first, 2 * MIB)
    assert parts.prefix == 5 * MIB


def test_a_reader_waiting_on_a_part_is_woken_by_its_progress() -> None:
    parts = _map()
    first, second = parts.take(), parts.take()
    assert first and second
    assert not parts.advance(second, 100)  # nobody waits there
    parts.want(2 * MIB + 500)
    assert parts.advance(second, 100) and not parts.advance(first, 100)


def test_the_untaken_rest_becomes_one_part_for_a_fast_stream() -> None:
    parts = _map()
    probe = parts.take()
    assert probe
    parts.advance(probe, 2 * MIB)
    parts.want(6 * MIB)
    parts.join_untaken()
    rest = parts.take()
    assert rest and (rest.start, rest.end) == (2 * MIB, SIZE) and parts.take() is None
    assert len(parts) == 2 and parts.prefix == 2 * MIB


def test_a_fill_gives_a_part_written_ahead_but_never_the_last_byte_unverified() -> None:
    async def run() -> None:
        fill = Fill("ab" * 32, SIZE, "/nonexistent", "/r", store=None)  # type: ignore[arg-type]
        parts = _map()

        class Download:
            parallel = True

            def extent(self, pos: int) -> int:
                return parts.extent(pos)

            def want(self, pos: int) -> None:
                parts.want(pos)

        fill.ahead = Download()
        taken = [parts.take() for _ in range(6)]
        parts.advance(taken[5], SIZE - 10 * MIB)  # the last part, whole
        assert fill.readable_from(10 * MIB) == SIZE - 1  # held back: the blob's last byte
        assert fill.readable_from(0) == 0
        waiter = asyncio.ensure_future(fill.wait_readable(4 * MIB + 1))
        await asyncio.sleep(0)
        assert not waiter.done()
        parts.advance(taken[2], MIB)
        fill.notify()
        await asyncio.wait_for(waiter, 1)
        fill.verified = True
        assert fill.readable_from(10 * MIB) == SIZE

    asyncio.run(run())


def test_ranges_a_stopped_filler_left_are_kept_and_only_the_gaps_fetched() -> None:
    parts = PartMap(plan(MIB, SIZE, 2 * MIB, 4, [(3 * MIB, 4 * MIB), (0, MIB // 2), (9 * MIB, 20 * MIB)]), SIZE)
    assert [(p.start, p.end, p.pos) for p in parts.parts] == [
        (MIB, 3 * MIB, MIB), (3 * MIB, 4 * MIB, 4 * MIB), (4 * MIB, 6 * MIB, 4 * MIB), (6 * MIB, 8 * MIB, 6 * MIB),
        (8 * MIB, 9 * MIB, 8 * MIB), (9 * MIB, SIZE, SIZE)]
    assert [p.start for p in iter(parts.take, None)] == [MIB, 4 * MIB, 6 * MIB, 8 * MIB]  # the kept ones are done
    assert parts.extent(3 * MIB) == 4 * MIB and parts.extent(9 * MIB) == SIZE


def test_joining_for_one_stream_keeps_the_kept_ranges_apart() -> None:
    parts = PartMap(plan(0, SIZE, 2 * MIB, 4, [(6 * MIB, 7 * MIB)]), SIZE)
    probe = parts.take()
    assert probe and probe.start == 0
    parts.join_untaken()
    assert [(p.start, p.end) for p in parts.parts] == [(0, 2 * MIB), (2 * MIB, 6 * MIB), (6 * MIB, 7 * MIB),
                                                       (7 * MIB, SIZE)]
    assert [p.start for p in iter(parts.take, None)] == [2 * MIB, 7 * MIB]
