"""Wake-ups for long-polling claims: waiters queue per lane, oldest first.

One new execution wakes one waiter, not every worker on the lane (each woken
worker costs a claim transaction). A waiter registers before it looks, so a
wake-up between its look and its wait is never lost; a waiter that was woken
but found its work elsewhere passes the wake-up on.
"""

from __future__ import annotations

from collections import deque

import trio


class WorkSignal:
    def __init__(self) -> None:
        self._waiters: dict[str, deque[trio.Event]] = {}
        self.closing = False

    def waiter(self, lane: str) -> trio.Event:
        """Register for the next wake-up of ``lane``; call before looking for work."""
        event = trio.Event()
        self._waiters.setdefault(lane, deque()).append(event)
        return event

    def done(self, lane: str, event: trio.Event, *, claimed: bool) -> None:
        """Unregister; a wake-up this waiter received but did not need goes to the next."""
        queue = self._waiters.get(lane)
        if queue is not None and event in queue:
            queue.remove(event)
        if claimed and event.is_set():
            self.notify(lane)
        if queue is not None and not queue:
            self._waiters.pop(lane, None)

    def waiting(self, lane: str) -> int:
        """How many claims wait on ``lane`` now."""
        return len(self._waiters.get(lane, ()))

    def notify(self, lane: str, count: int = 1) -> None:
        """Wake up to ``count`` waiters of ``lane``, oldest first."""
        queue = self._waiters.get(lane)
        while queue and count > 0:
            event = queue.popleft()
            event.set()
            count -= 1

    def notify_all(self, lane: str) -> None:
        for event in self._waiters.pop(lane, ()):
            event.set()

    def close(self) -> None:
        """Release every waiter now: the appliance is draining."""
        self.closing = True
        for lane in list(self._waiters):
            self.notify_all(lane)
