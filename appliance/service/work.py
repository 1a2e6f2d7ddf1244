"""Wake-ups for long-polling claims: waiters queue per lane, oldest first.

New work wakes only as many waiters as it can keep busy: each waiter says how many
tasks it wants (a batch claim wants many), and ``notify(lane, n)`` for n executions
made claimable wakes waiters until their wants cover n (each woken worker costs a
claim transaction). A waiter registers before it looks, so a wake-up between its
look and its wait is never lost; a woken waiter that claimed work passes one
wake-up on, since the work it took may have been another waiter's.
"""

from __future__ import annotations

from collections import deque

import trio


class Waiter:
    __slots__ = ("event", "want")

    def __init__(self, want: int) -> None:
        self.event = trio.Event()
        self.want = want

    async def wait(self) -> None:
        await self.event.wait()


class WorkSignal:
    def __init__(self) -> None:
        self._waiters: dict[str, deque[Waiter]] = {}
        self.closing = False

    def waiter(self, lane: str, want: int = 1) -> Waiter:
        """Register for the next wake-up of ``lane``; call before looking for work."""
        waiter = Waiter(want)
        self._waiters.setdefault(lane, deque()).append(waiter)
        return waiter

    def done(self, lane: str, waiter: Waiter, *, claimed: bool) -> None:
        """Unregister; a waiter that was woken and claimed work passes one wake-up on."""
        queue = self._waiters.get(lane)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
        if claimed and waiter.event.is_set():
            self.notify(lane)
        if queue is not None and not queue:
            self._waiters.pop(lane, None)

    def waiting(self, lane: str) -> int:
        """How many claims wait on ``lane`` now."""
        return len(self._waiters.get(lane, ()))

    def notify(self, lane: str, count: int = 1) -> None:
        """``count`` executions of ``lane`` became claimable: wake the oldest waiters
        until what they want covers them."""
        queue = self._waiters.get(lane)
        while queue and count > 0:
            waiter = queue.popleft()
            waiter.event.set()
            count -= waiter.want

    def notify_all(self, lane: str) -> None:
        for waiter in self._waiters.pop(lane, ()):
            waiter.event.set()

    def close(self) -> None:
        """Release every waiter now: the appliance is draining."""
        self.closing = True
        for lane in list(self._waiters):
            self.notify_all(lane)
