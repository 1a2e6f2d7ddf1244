"""Attempt streams in the service: appends wake the tails of their execution, tails wait
for that wake-up (never polling), event streams are tails in a loop, and all reads share
one bounded pool. Nothing here knows about HTTP. See spec/streams.md."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import trio

from appliance.core import streams as st
from appliance.core.admission import wake_key
from appliance.core.errors import StreamOpsExhausted

if TYPE_CHECKING:
    from .facade import Service

#: Frames one event-stream read takes at most.
EVENTS_BATCH = 100


class Streams:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.backend = service.backend
        self.config = service.config
        self.in_flight = 0

    # -- the pool ---------------------------------------------------------------------------
    def permit(self) -> Callable[[], None]:
        """Take a place in the pool (429 when none is left); call the answer to give it back."""
        limit = self.config.max_concurrent_stream_ops
        if self.in_flight >= limit:
            raise StreamOpsExhausted(f"too many concurrent stream_ops calls (server max: "
                                     f"{limit}); retry with backoff")
        self.in_flight += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.in_flight -= 1
        return release

    # -- the worker side ----------------------------------------------------------------------
    async def append(self, execution_id: str, args: st.AppendArgs) -> st.Appended:
        appended, woken = await self.backend.append_frames(execution_id, args)
        self.service.wake(woken)
        return appended

    # -- readers ------------------------------------------------------------------------------
    async def read(self, execution_id: str, index: int, lo: st.FrameId, hi: st.FrameId,
                   limit: int) -> st.StreamPage:
        release = self.permit()
        try:
            return await self.backend.read_frames(execution_id, index, lo, hi, limit)
        finally:
            release()

    async def tail(self, execution_id: str, index: int, after: st.FrameId, limit: int,
                   block_ms: int) -> st.StreamPage:
        release = self.permit()
        try:
            return await self.wait_for_frames(execution_id, index, after, limit, block_ms / 1000)
        finally:
            release()

    async def wait_for_frames(self, execution_id: str, index: int, after: st.FrameId,
                              limit: int, wait_s: float) -> st.StreamPage:
        """Frames after ``after``; with none yet, wait up to ``wait_s`` for an append or the
        close. The waiter registers before it reads, so an append between the read and the
        wait still wakes it; a drain wakes every waiter."""
        work = self.service.work
        key = wake_key("stream", execution_id)
        deadline = trio.current_time() + wait_s
        while True:
            waiter = work.waiter(key, 0)  # wanting 0: every waiter of the key is woken
            try:
                page = await self.backend.read_frames(execution_id, index, after.next(),
                                                      st.LAST, limit)
                remaining = deadline - trio.current_time()
                if page.frames or page.closed or remaining <= 0 or work.closing:
                    return page
                with trio.move_on_after(remaining):
                    await waiter.wait()
            finally:
                work.done(key, waiter, claimed=False)

    async def events(self, execution_id: str, index: int, after: st.FrameId) -> EventStream:
        """Server-Sent Events from ``after`` until the stream closes, the client goes away
        (``EventStream.stop``) or the appliance drains. The first read happens here, so an
        unknown execution fails before the response starts; the place in the pool is held
        until the event stream ends."""
        release = self.permit()
        try:
            first = await self.backend.read_frames(execution_id, index, after.next(), st.LAST,
                                                   EVENTS_BATCH)
        except BaseException:
            release()
            raise
        return EventStream(self, execution_id, index, first, after, release)

    async def summary(self, execution_id: str, index: int) -> st.Summary | None:
        return await self.backend.stream_summary(execution_id, index)


class EventStream:
    """One event stream's body (iterate it once); ``stop()`` ends it early."""

    def __init__(self, streams: Streams, execution_id: str, index: int, first: st.StreamPage,
                 after: st.FrameId, release: Callable[[], None]) -> None:
        self.streams = streams
        self.execution_id, self.index = execution_id, index
        self.first, self.after = first, after
        self.release = release
        self.stopped = False
        self._waiting: trio.CancelScope | None = None

    def stop(self) -> None:
        """The client went away: end at the next wait (a wait under way ends now)."""
        self.stopped = True
        if self._waiting is not None:
            self._waiting.cancel()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._events()

    def __del__(self) -> None:
        # never iterated (the request was cancelled before its response started): the
        # place in the pool goes back here (releasing twice is harmless)
        self.release()

    async def _events(self) -> AsyncIterator[bytes]:
        page, after, work = self.first, self.after, self.streams.service.work
        try:
            yield b"retry: 1000\n\n"
            while True:
                for frame in page.frames:
                    yield sse_event(frame)
                    after = frame.id
                if page.closed is not None and not page.frames:
                    data = json.dumps({"closed_at": page.closed.at,
                                       "closed_reason": page.closed.reason},
                                      separators=(",", ":"))
                    yield f"event: closed\ndata: {data}\n\n".encode()
                    return
                if not page.frames:
                    yield b": keepalive\n\n"
                if work.closing or self.stopped:
                    return
                with trio.CancelScope() as self._waiting:
                    page = await self.streams.wait_for_frames(
                        self.execution_id, self.index, after, EVENTS_BATCH,
                        self.streams.config.sse_keepalive_s)
                self._waiting = None
                if self.stopped:
                    return
        finally:
            self.release()


def sse_event(frame: st.Frame) -> bytes:
    data = json.dumps(frame.wire(), ensure_ascii=False, separators=(",", ":"))
    return f"id: {frame.id}\nevent: frame\ndata: {data}\n\n".encode()
