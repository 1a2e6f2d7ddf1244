"""A circuit breaker for a shared store: while the store is unreachable, fail at once.

Closed, operations go to the store. When one fails because the store is
unreachable (refused, reset, shutting down), the backend ``open``s the circuit:
from then on every operation raises ``StoreUnavailable`` at once, and waits
already under way inside ``failing_fast`` (for a pooled connection, a retry's
backoff) end with it too. A probe (a fresh connection and a trivial command)
runs every 250 ms, backing off to 2 s; once it answers, the backend's
``on_close`` refreshes its connections and the circuit closes. Trouble that may
only mean "busy" (no pooled connection in time, a slow ping) is ``suspect``ed:
the probe runs at once and opens the circuit only if the store does not answer
it. Typed business errors never reach the circuit.

``run`` is the probe loop; a backend runs it inside ``serve_work_notifications``.
Without it (a backend driven directly, as in tests) an open circuit lets one
operation through every 250 ms..2 s, and that operation is the probe.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import trio

from appliance.core.errors import StoreUnavailable

log = logging.getLogger("flowfabric.backend")

PROBE_MIN_S, PROBE_MAX_S = 0.25, 2.0

Probe = Callable[[], Awaitable[None]]


class Circuit:
    """Whether ``store`` answers; ``probe()`` raises (or hangs) while it does not."""

    def __init__(self, store: str, probe: Probe, *, on_close: Probe | None = None,
                 probe_timeout_s: float = 1.0) -> None:
        self.store = store
        self.probe_timeout_s = probe_timeout_s
        self._probe = probe
        self._on_close = on_close
        #: Wall-clock seconds: since when the store is down (None: closed), when it last answered.
        self.opened_at: float | None = None
        self.last_success: float | None = None
        self.reason = ""
        #: Probes the store answered (for tests and, later, metrics).
        self.probes_answered = 0
        self._down_since = 0.0
        self._closed = trio.Event()
        self._closed.set()
        self._wake = trio.Event()
        self._suspected = False
        self._probe_loops = 0
        self._trial_at, self._trial_delay = 0.0, PROBE_MIN_S
        self._waits: set[trio.CancelScope] = set()

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def error(self) -> StoreUnavailable:
        since = datetime.fromtimestamp(self._down_since, UTC).isoformat(timespec="milliseconds")
        return StoreUnavailable(f"{self.store} is down since {since.replace('+00:00', 'Z')} "
                                f"({self.reason}); it is being probed and requests fail at once "
                                f"until it answers; retry the request")

    # -- what operations call ----------------------------------------------------------------
    def check(self) -> None:
        """Raise ``StoreUnavailable`` at once while the circuit is open."""
        if self.opened_at is None:
            return
        if not self._probe_loops and trio.current_time() >= self._trial_at:
            # Nobody probes: let this operation through as the probe.
            self._trial_at = trio.current_time() + self._trial_delay
            self._trial_delay = min(self._trial_delay * 2, PROBE_MAX_S)
            return
        raise self.error()

    def succeeded(self) -> None:
        """An operation got its answer from the store."""
        self.last_success = time.time()
        if self.opened_at is not None and not self._probe_loops:
            self._close()

    def open(self, reason: str) -> None:
        """The store is unreachable: fail every operation at once until the probe answers."""
        self.reason = reason
        if self.opened_at is not None:
            return
        self.opened_at = self._down_since = time.time()
        self._closed = trio.Event()
        self._trial_at, self._trial_delay = trio.current_time() + PROBE_MIN_S, PROBE_MIN_S * 2
        if self.last_success is not None:  # before its first answer, the startup refusal says it
            log.warning("%s is unreachable (%s; last answered %.1fs ago): requests fail at once "
                        "until it answers again", self.store, reason,
                        time.time() - self.last_success)
        for scope in self._waits:
            scope.cancel()
        self._wake.set()

    def suspect(self) -> None:
        """Trouble that may only mean "busy": the probe decides, at once."""
        if self.opened_at is None:
            self._suspected = True
            self._wake.set()

    @contextmanager
    def failing_fast(self) -> Iterator[None]:
        """Checked at once; the enclosed waits are cancelled if the circuit opens meanwhile."""
        self.check()
        scope = trio.CancelScope()
        self._waits.add(scope)
        try:
            with scope:
                yield
        finally:
            self._waits.discard(scope)
        if scope.cancelled_caught:
            raise self.error()

    async def wait_closed(self) -> None:
        """Return once the store answers again (at once if it does)."""
        while self.opened_at is not None:
            await self._closed.wait()

    # -- the probe loop --------------------------------------------------------------------------
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Probe when suspected, and while open until the store answers; until cancelled."""
        self._probe_loops += 1
        try:
            task_status.started()
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                if self.opened_at is not None:
                    await self._probe_until_answered()
                elif self._suspected:
                    self._suspected = False
                    trouble = await self._try_probe()
                    if trouble is not None:
                        self.open(trouble)
                    else:
                        await trio.sleep(PROBE_MIN_S)  # one suspicion probe per 250 ms at most
        finally:
            self._probe_loops -= 1

    async def _probe_until_answered(self) -> None:
        delay = PROBE_MIN_S
        while self.opened_at is not None:
            await trio.sleep(delay)
            trouble = await self._try_probe()
            if trouble is None and self._on_close is not None:
                try:
                    await self._on_close()
                except Exception as exc:  # e.g. the store went away again meanwhile
                    trouble = _first_line(exc)
            if trouble is None:
                self._close()
                return
            self.reason = trouble
            delay = min(delay * 2, PROBE_MAX_S)

    async def _try_probe(self) -> str | None:
        """None if the store answered within the timeout, else what went wrong."""
        with trio.move_on_after(self.probe_timeout_s):
            try:
                await self._probe()
            except Exception as exc:
                return _first_line(exc)
            self.probes_answered += 1
            return None
        return f"no answer within {self.probe_timeout_s:g}s"

    def _close(self) -> None:
        down_for = time.time() - self._down_since
        self.opened_at = None
        self._closed.set()
        log.info("%s answers again after %.1fs down; serving requests", self.store, down_for)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
