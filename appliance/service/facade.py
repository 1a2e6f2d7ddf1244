"""The service facade over a backend: operations through the registry, wake-ups in one
place, the long-polling claim, reads.

Nothing here knows about HTTP. Every state change goes through ``apply`` or
``create`` (or a claim), and every lane they report as made claimable wakes the
claims waiting on it here, and only here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import trio

from appliance.backend import Backend
from appliance.backend.protocol import Task
from appliance.config import Config
from appliance.core.admission import wake_key
from appliance.core.contracts import ClaimArgs, CreateArgs, ListPage
from appliance.core.errors import ExecutionNotFound
from appliance.core.operations import Applied, Mutation, Operation
from appliance.core.outcomes import Outcome
from appliance.core.record import Execution

from .admission import Admission
from .coalesce import Coalescer
from .flows import Flows
from .streams import Streams
from .suspension import Suspensions
from .work import WorkSignal


class Service:
    def __init__(self, backend: Backend, config: Config) -> None:
        self.backend = backend
        self.config = config
        self.work = WorkSignal()
        self.background: Any = None  # the supervisor's bounded background nursery
        #: Single operations of concurrent requests, one store call for all of them.
        self._apply_one = Coalescer(self.backend.apply)
        self._create_one = Coalescer(self.backend.create)
        self.flows = Flows(self)
        self.suspensions = Suspensions(self)
        self.admission = Admission(self)
        self.streams = Streams(self)

    # -- state changes --------------------------------------------------------------------
    async def apply(self, op: Operation[Any], execution_id: str, args: Any) -> Outcome:
        """One operation on one execution: its answer, or its typed error raised."""
        [applied] = await self.apply_many([Mutation(op, execution_id, args)])
        outcome = applied.unwrap()
        assert outcome is not None, f"{op.name} answered nothing"
        return outcome

    async def apply_many(self, mutations: Sequence[Mutation]) -> list[Applied]:
        """Each mutation atomic on its own; a lone one shares its store call with those
        of concurrent requests (``coalesce``)."""
        applied = ([await self._apply_one(mutations[0])] if len(mutations) == 1
                   else await self.backend.apply(mutations))
        self.wake(lane for a in applied for lane in a.woken)
        return applied

    async def create(self, batch: Sequence[CreateArgs]) -> list[Applied]:
        applied = ([await self._create_one(batch[0])] if len(batch) == 1
                   else await self.backend.create(batch))
        self.wake(lane for a in applied for lane in a.woken)
        return applied

    def wake(self, lanes: Iterable[str]) -> None:
        """``lanes`` names a lane once per execution made claimable: wake the claims
        waiting there that it can keep busy (each wake costs a claim)."""
        for lane, count in Counter(lanes).items():
            self.work.notify(lane, count)

    # -- claiming -------------------------------------------------------------------------
    async def claim(self, args: ClaimArgs, wait_ms: int) -> list[Task]:
        """Lease up to ``args.max_tasks`` executions, waiting up to ``wait_ms`` for at least
        one to arrive (an empty list: nothing came).

        A waiter registers before it looks, so a wake-up between its look and its wait
        is never lost; with ``FF_CLAIM_REPOLL_MS`` it also looks again that often, for
        wake-ups another appliance's notification might have lost.
        """
        deadline = trio.current_time() + wait_ms / 1000
        repoll = self.config.claim_repoll_s or float("inf")
        await self.admission.seen(args)
        while True:
            woken = self.work.waiter(args.lane_id, args.max_tasks, args.capabilities)
            got: list[Task] = []
            held: list[tuple[str, Any]] = []
            try:
                generation = self.work.generation
                claim = await self.backend.claim(args)
                got = list(claim.tasks)
                # Its promotions made work claimable: wake the waiters for what it did not take.
                self.wake(claim.woken[len(got):])
                if got:
                    return await self.resumed(got)
                remaining = deadline - trio.current_time()
                if remaining <= 0 or self.work.closing:
                    return []
                # work held back by a quota's rate window is claimable again at retry_at
                freed = (float("inf") if claim.retry_at is None else
                         max(claim.retry_at - self.config.clock.now_ms(), 1) / 1000)
                # work held back by a budget or quota: its reset or freed slot wakes us too
                held = [(key, self.work.waiter(key, args.max_tasks, args.capabilities,
                                               woken.event)) for key in claim.gated]
                if held and self.work.generation != generation:
                    continue  # a wake-up came while we looked: look again
                with trio.move_on_after(min(remaining, repoll, freed)):
                    await woken.wait()
            finally:
                self.work.done(args.lane_id, woken, claimed=bool(got))
                for key, waiter in held:
                    self.work.done(key, waiter, claimed=False)

    async def resumed(self, tasks: list[Task]) -> list[Task]:
        """Each task says whether it resumes a suspended attempt; one that does carries the
        signals that resumed it (read here unless the store's claim answered them)."""
        for task, _data in tasks:
            if task["attempt_type"] == "reclaim":  # the previous attempt's stream closed
                self.wake([wake_key("stream", task["execution_id"])])
            resumed = task["attempt_type"] == "resumed"
            task["resumed"] = resumed
            if not resumed:
                task["signals"] = []
            elif "signals" not in task:  # a store that does not answer them with the claim
                task["signals"] = [s.for_worker() for s in
                                   await self.suspensions.resume_signals(task["execution_id"])]
        return tasks

    # -- reads --------------------------------------------------------------------------------
    async def record(self, execution_id: str) -> Execution:
        ex = await self.backend.get_execution(execution_id)
        if ex is None:
            raise ExecutionNotFound.of(execution_id=execution_id)
        return ex

    async def result(self, execution_id: str) -> tuple[Execution, bytes | None]:
        found = await self.backend.get_result(execution_id)
        if found is None:
            raise ExecutionNotFound.of(execution_id=execution_id)
        return found

    async def list_executions(self, partition: int, cursor: str | None, limit: int) -> ListPage:
        return await self.backend.list_executions(partition, cursor, limit)
