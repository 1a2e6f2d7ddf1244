"""Concurrent single operations made into one batch call: one store round trip for many
requests.

The first caller leads: it waits while the previous batch is in the store (callers
queue meanwhile), then takes everything queued (up to ``max_batch``) and makes the
call for all of them; the next caller still queued leads the next batch. A batch call
answers each item on its own (``Backend.apply``/``create``), so items only share the
trip. The call runs shielded: once items are taken they are sent, and each caller
hears its answer unless it stopped waiting (a cancelled caller queued but not yet
taken is dropped, as the SQLite writer drops it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import trio

T = TypeVar("T")
R = TypeVar("R")

MAX_BATCH = 256


class _Caller(Generic[T]):
    __slots__ = ("item", "woken", "lead", "answer")

    def __init__(self, item: T) -> None:
        self.item = item
        self.woken = trio.Event()  # answered, or made leader
        self.lead = False
        #: (True, result) or (False, the exception the batch call raised).
        self.answer: tuple[bool, Any] | None = None


class Coalescer(Generic[T, R]):
    def __init__(self, call: Callable[[list[T]], Awaitable[list[R]]],
                 max_batch: int = MAX_BATCH) -> None:
        self._call = call
        self._max = max_batch
        self._queue: list[_Caller[T]] = []
        self._in_store = trio.Lock()

    async def __call__(self, item: T) -> R:
        await trio.lowlevel.checkpoint_if_cancelled()
        me = _Caller(item)
        self._queue.append(me)
        if len(self._queue) == 1:
            me.lead = True
        try:
            if not me.lead:
                await me.woken.wait()
            if me.answer is None:  # made leader, not yet answered
                await self._lead()
        except trio.Cancelled:
            self._leave(me)
            raise
        assert me.answer is not None
        ok, value = me.answer
        if not ok:
            raise value
        return value

    async def _lead(self) -> None:
        async with self._in_store:
            batch, self._queue = self._queue[:self._max], self._queue[self._max:]
            self._hand_on()
            answers: list[tuple[bool, Any]] = [(False, RuntimeError(
                "the batch this operation was in did not finish"))] * len(batch)
            try:
                with trio.CancelScope(shield=True):
                    results = await self._call([c.item for c in batch])
                answers = [(True, r) for r in results]
            except Exception as exc:
                answers = [(False, exc)] * len(batch)
            finally:
                for caller, answer in zip(batch, answers, strict=True):
                    caller.answer = answer
                    caller.woken.set()

    def _hand_on(self) -> None:
        """The first caller still queued leads the next batch."""
        if self._queue and not self._queue[0].lead:
            self._queue[0].lead = True
            self._queue[0].woken.set()

    def _leave(self, me: _Caller[T]) -> None:
        """A caller cancelled before its batch was taken: out of the queue, and if it
        was to lead, the next one leads."""
        if me in self._queue:
            self._queue.remove(me)
            if me.lead:
                self._hand_on()
