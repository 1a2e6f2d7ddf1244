"""Which partitions a claim should call: this appliance's view of where each lane's work is.

One FCALL can only look at one partition, so a claim calls the partitions this view says hold
work that is claimable by now, the lane's solo partition first. The view is refreshed from
the store (``ff:p:{fp:N}:lanes``, kept by the library) every ``PROBE_INTERVAL_S``; in between,
every local operation and every notification from another appliance marks the partition it
touched, and every claim answer says what is left on the partition it called. A stale view
only costs a call; it never hides work for longer than one probe interval.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

PROBE_INTERVAL_S = 0.25


@dataclass(slots=True)
class LaneView:
    #: partition -> when the lane's work there is next claimable (0: now).
    scores: dict[int, float] = field(default_factory=dict)
    probed_at: float = -math.inf
    version: int = 0
    #: partition -> the version of its last mark (at most one entry per partition).
    marked: dict[int, int] = field(default_factory=dict)
    probing: bool = False


class WorkMap:
    def __init__(self) -> None:
        self._lanes: dict[str, LaneView] = {}
        self._turn = 0

    def view(self, lane: str) -> LaneView:
        return self._lanes.setdefault(lane, LaneView())

    def stale(self, lane: str) -> bool:
        """Time to probe (unless a probe of the lane is already running)."""
        view = self.view(lane)
        return not view.probing and time.monotonic() - view.probed_at > PROBE_INTERVAL_S

    def mark(self, partition: int, lane: str | None = None) -> None:
        """Work on ``partition`` may have become claimable (for ``lane``, or any lane)."""
        views = [self.view(lane)] if lane is not None else list(self._lanes.values())
        for view in views:
            view.version += 1
            view.scores[partition] = 0
            view.marked[partition] = view.version

    def seen(self, lane: str, partition: int, next_claimable: float, since_version: int) -> None:
        """A claim answer, for a call made at ``since_version``: the lane's work left on
        ``partition`` (-1: none). Work marked there since the call went out stays marked:
        the call may have run before that work landed."""
        view = self.view(lane)
        if view.marked.get(partition, -1) > since_version:
            return
        if next_claimable < 0:
            view.scores.pop(partition, None)
        else:
            view.scores[partition] = next_claimable

    def probed(self, lane: str, scores: dict[int, float], since_version: int) -> None:
        """Replace the view with a probe that started at ``since_version``, keeping marks
        made while it ran."""
        view = self.view(lane)
        for partition, version in view.marked.items():
            if version > since_version:
                scores[partition] = 0
        view.scores = scores
        view.probed_at = time.monotonic()

    def order(self, lane: str, solo: int, now: int) -> list[int]:
        """The partitions holding claimable work: the solo one first, the others in a
        rotating order."""
        scores = self.view(lane).scores
        first = [solo] if scores.get(solo, math.inf) <= now else []
        others = sorted(p for p, at in scores.items() if at <= now and p != solo)
        if others:
            self._turn = (self._turn + 1) % len(others)
            others = others[self._turn:] + others[:self._turn]
        return first + others
