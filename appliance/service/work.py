"""Wake-ups for long-polling claims: one event per lane, replaced on each notify."""

from __future__ import annotations

import trio


class WorkSignal:
    def __init__(self) -> None:
        self._events: dict[str, trio.Event] = {}
        self.closing = False

    def event(self, lane: str) -> trio.Event:
        """The event that fires on the next ``notify(lane)``; fetch it before looking."""
        ev = self._events.get(lane)
        if ev is None:
            ev = self._events[lane] = trio.Event()
        return ev

    def notify(self, lane: str) -> None:
        ev = self._events.pop(lane, None)
        if ev is not None:
            ev.set()

    def close(self) -> None:
        """Release every waiter now: the appliance is draining."""
        self.closing = True
        for lane in list(self._events):
            self.notify(lane)
