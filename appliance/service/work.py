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
    __slots__ = ("caps", "event", "want")

    def __init__(self, want: int) -> None:
        self.event = trio.Event()
        self.want = want
        self.caps: tuple[str, ...] = ()

    async def wait(self) -> None:
        await self.event.wait()


class WorkSignal:
    """Waiters per lane, grouped by the capability set they claim with: a wake-up reaches
    the oldest waiters of every group, so work only some workers can run reaches one of
    them however many others wait ahead."""

    def __init__(self) -> None:
        self._waiters: dict[str, dict[tuple[str, ...], deque[Waiter]]] = {}
        self.closing = False
        #: Counts wake-ups, so a claim can tell whether one came while it looked.
        self.generation = 0

    def waiter(self, lane: str, want: int = 1, caps: tuple[str, ...] = (),
               event: trio.Event | None = None) -> Waiter:
        """Register for the next wake-up of ``lane``; call before looking for work. ``event``
        shares one wake-up between several registrations of one claim."""
        waiter = Waiter(want)
        waiter.caps = caps
        if event is not None:
            waiter.event = event
        self._waiters.setdefault(lane, {}).setdefault(caps, deque()).append(waiter)
        return waiter

    def done(self, lane: str, waiter: Waiter, *, claimed: bool) -> None:
        """Unregister; a waiter that was woken and claimed work passes one wake-up on."""
        groups = self._waiters.get(lane)
        queue = groups.get(waiter.caps) if groups is not None else None
        if queue is not None and waiter in queue:
            queue.remove(waiter)
        if claimed and waiter.event.is_set():
            self.notify(lane)
        if groups is not None and queue is not None and not queue:
            groups.pop(waiter.caps, None)
            if not groups:
                self._waiters.pop(lane, None)

    def waiting(self, lane: str) -> int:
        """How many claims wait on ``lane`` now."""
        return sum(len(q) for q in self._waiters.get(lane, {}).values())

    def notify(self, lane: str, count: int = 1) -> None:
        """``count`` executions of ``lane`` became claimable: in each capability group,
        wake the oldest waiters until what they want covers them."""
        self.generation += 1
        for queue in list(self._waiters.get(lane, {}).values()):
            left = count
            while queue and left > 0:
                waiter = queue.popleft()
                waiter.event.set()
                left -= waiter.want

    def notify_all(self, lane: str) -> None:
        for queue in self._waiters.pop(lane, {}).values():
            for waiter in queue:
                waiter.event.set()

    def wake_everyone(self) -> None:
        """Something lifted a limit on unknown lanes (a budget reset): every waiter looks."""
        for lane in list(self._waiters):
            self.notify_all(lane)

    def close(self) -> None:
        """Release every waiter now: the appliance is draining."""
        self.closing = True
        self.wake_everyone()
