import asyncio

import pytest

from router.delivery.gate import Gate


async def test_slots_are_handed_out_first_come_first_served() -> None:
    gate = Gate(2)
    order: list[int] = []

    async def batch(i: int) -> None:
        assert await gate.acquire()
        order.append(i)
        await asyncio.sleep(0.01)
        gate.release()

    await asyncio.gather(*(batch(i) for i in range(6)))
    assert order == list(range(6))
    assert gate.free == 2 and not gate.waiters


async def test_turned_away_waiters_take_no_slot() -> None:
    gate = Gate(1)
    assert await gate.acquire()
    waiting = [asyncio.create_task(gate.acquire()) for _ in range(3)]
    await asyncio.sleep(0)
    assert gate.turn_away() == 3
    assert [await w for w in waiting] == [False, False, False]
    gate.release()
    assert gate.free == 1
    assert await gate.acquire()  # the slot is still there


async def test_a_cancelled_waiter_passes_on_the_slot_it_was_handed() -> None:
    gate = Gate(1)
    assert await gate.acquire()
    first = asyncio.create_task(gate.acquire())
    second = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    gate.release()  # handed to `first` ...
    first.cancel()  # ... which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(second, 1) is True
    gate.release()
    assert gate.free == 1


async def test_a_cancelled_waiter_is_skipped() -> None:
    gate = Gate(1)
    assert await gate.acquire()
    gone = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.sleep(0)
    gate.release()
    assert gate.free == 1 and gate.turn_away() == 0
