"""Admission on Valkey (spec/admission.md): the claim pipeline's gate, claim grants, budgets,
quotas and the worker registry. The library's side is lua/50_admission.lua (keys listed
there); the SQL stores' reference is appliance/backend/sql/admission.py.

Budgets (``{b:M}``) and quotas (``{q:K}``) live in slots of their own, which a claim on an
execution partition (``{fp:N}``) cannot reach, so a claim of limited work goes:

1. ``ff_claim`` leases what outranks every limited class it has no verdict for, and when such
   a class holds the best head answers which budgets and quotas it needs decided (work
   without budgets or quota is one FCALL per partition, as before admission existed);
2. ``ClaimGate.resolve`` reads those budgets and reserves room on each quota (one FCALL per
   quota, on its slot: the reservation counts as admissions and holders at once, so two
   claims never take the same room), all in one pipeline;
3. ``ff_claim`` again, with the verdicts: it takes at most the reserved room of each quota;
4. ``ClaimGate.commit``: each reservation becomes the executions actually admitted (window
   entries and slot holders), the rest is released. An appliance dying in between leaves
   provisional entries, dropped after ``RESERVATION_GRACE_MS``.

The next claim of a lane whose last claim had to decide admission does step 2 before its
first FCALL (``LaneNeeds``): three round trips while a lane's best work is limited.

A slot is held while the execution is leased or granted (``admission.holds_slot``); the
library's record writes cannot reach the quota's holder set, so a holder whose record no
longer holds is dropped lazily: when a reservation finds the cap reached, when the quota is
read, and by the ``quota_reconciler`` (compare-and-remove on the admission it saw).

Claims held back by a budget or quota wait on its wake key (``admission.wake_key``, the
claim's ``gated``): a call that frees a slot answers the quota's key beside the lanes it woke,
and the library publishes ``q:<quota>`` / ``b:<budget>`` (a reset) on the work channel for
the other appliances; released or dropped room is published for this appliance too.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from appliance.core import admission as adm
from appliance.core import transitions as rules
from appliance.core.contracts import ClaimArgs
from appliance.core.errors import (
    BudgetExhausted,
    BudgetNotAttached,
    ExecutionNotFound,
    InvalidHandle,
    QuotaExceeded,
    error_from,
)
from appliance.core.handle import Fence
from appliance.core.ids import fresh_uuid, fresh_uuids
from appliance.core.operations import Ctx
from appliance.core.partitions import crc16, solo_partition
from appliance.core.record import Execution
from appliance.core.transitions import _check_lease

from . import codec, keys

if TYPE_CHECKING:
    from appliance.backend.protocol import Task

    from .connection import Connection

#: A reservation not committed within this (appliance time) is dropped: its claim died.
RESERVATION_GRACE_MS = 10_000
#: Holders a reservation that finds the concurrency cap reached hands back to be checked.
HOLDER_CHECK = 256
#: Holders ``get_quota`` checks against their records (any more count as holding).
VIEW_HOLDERS = 10_000
#: Extra real time a usage dedup key lives past its 24 h (judged by the appliance clock).
DEDUP_GRACE_MS = 60_000
#: Verdict rounds per partition of one claim (a class appearing meanwhile asks again).
VERDICT_ROUNDS = 3
#: Registry entries read per round trip while listing workers.
WORKER_CHUNK = 256
#: Lanes whose next claim decides admission before its first FCALL (see ``LaneNeeds``).
LANE_NEEDS_MAX = 10_000


def limit_partition(limit_id: str, partitions: int) -> int:
    """A budget's or quota's partition: CRC16 of the UUID's 16 bytes (reference D §1.2)."""
    return crc16(uuid.UUID(limit_id).bytes) % partitions


@dataclass(slots=True)
class QuotaRoom:
    """One claim's reservations on one quota."""

    tokens: list[list[Any]] = field(default_factory=list)
    reserved: int = 0
    used: list[str] = field(default_factory=list)
    #: The quota does not exist: it limits nothing.
    missing: bool = False
    #: A reservation found no more room (the rest of the claim takes none).
    exhausted: bool = False
    reason: str = ""
    retry: int = 0
    limits: tuple[int, int, int] = (0, 0, 0)  # rate, window_seconds, concurrency

    def left(self) -> int:
        return self.reserved - len(self.used)


class LaneNeeds:
    """The budgets and quotas the last claim of each lane had to decide. The next claim of
    the lane decides them before its first FCALL (saving one round trip when the lane's
    best work is limited); a claim that then takes no limited work forgets the lane, so a
    lane whose limited work is gone or outranked is back to one FCALL."""

    def __init__(self) -> None:
        self._lanes: dict[str, tuple[list[str], dict[str, int]]] = {}

    def get(self, lane: str) -> tuple[list[str], dict[str, int]] | None:
        return self._lanes.get(lane)

    def after(self, lane: str, gate: ClaimGate, hinted: bool) -> None:
        if gate.asked_budgets or gate.asked_quotas:
            if len(self._lanes) > LANE_NEEDS_MAX:
                self._lanes.clear()
            self._lanes[lane] = (sorted(gate.asked_budgets), dict(gate.asked_quotas))
        elif hinted and not gate.limited:
            self._lanes.pop(lane, None)


class ClaimGate:
    """What one claim knows of the budgets and quotas of the classes it looks at."""

    def __init__(self, backend: AdmissionMixin, now: int, lane: str) -> None:
        self.backend = backend
        self.now = now
        self.lane = lane
        self.budgets: dict[str, adm.Budget | None] = {}
        self.quotas: dict[str, QuotaRoom] = {}
        #: what the library asked this claim to decide, and how many limited executions it
        #: took
        self.asked_budgets: set[str] = set()
        self.asked_quotas: dict[str, int] = {}
        self.limited = 0

    def verdicts(self) -> dict[str, Any]:
        """``bud``, ``qroom`` and ``qmore`` for ``ff_claim`` (see lease_best): a quota whose
        reserved room is used up but not exhausted is left out, so the claim asks for more,
        and one with room left is in ``qmore``, so it asks once it used it up."""
        out: dict[str, Any] = {}
        if self.budgets:
            out["bud"] = {b: int(found is not None and found.breach() is not None)
                          for b, found in self.budgets.items()}
        qroom, more = {}, {}
        for q, room in self.quotas.items():
            if room.missing:
                qroom[q] = 1 << 30
            elif room.left() > 0 or room.exhausted:
                qroom[q] = room.left()
                if not room.exhausted:
                    more[q] = 1
        if qroom:
            out["qroom"] = qroom
        if more:
            out["qmore"] = more
        return out

    def used(self, used: dict[str, list[str]]) -> None:
        for q, eids in used.items():
            self.quotas.setdefault(q, QuotaRoom()).used.extend(eids)

    async def resolve(self, budgets: list[str], quotas: dict[str, int], want: int) -> None:
        """Read the budgets not read yet and reserve room on the quotas (one pipeline)."""
        conn = self.backend._conn()
        partitions = self.backend.env.partitions
        budgets = [b for b in dict.fromkeys(budgets) if b not in self.budgets]
        asks = {q: max(1, min(int(n), want)) for q, n in quotas.items()
                if not (q in self.quotas and (self.quotas[q].missing
                                              or self.quotas[q].exhausted))}
        calls: list[tuple[str, list[str], dict[str, Any], list[bytes]]] = []
        for b in budgets:
            calls.append(("ff_budget_get", [keys.budget(limit_partition(b, partitions.budget),
                                                        b)], {}, []))
        tokens = {}
        for q, n in asks.items():
            tokens[q] = fresh_uuid()[:13]
            calls.append(("ff_quota_reserve", [self.backend._quota_key(q)],
                          self._reserve_args(tokens[q], n), []))
        if not calls:
            return
        answers = await conn.fcall_many(calls)
        for raw in answers:
            if isinstance(raw, BaseException):
                raise raw
        for b, raw in zip(budgets, answers, strict=False):
            found = codec.budget_from(raw or [])
            self.budgets[b] = found
        for (q, n), raw in zip(asks.items(), answers[len(budgets):], strict=True):
            await self._reserved(q, n, tokens[q], codec.decode_answer(raw)["ok"], again=True)

    def _reserve_args(self, token: str, n: int) -> dict[str, Any]:
        return {**self.backend._args(), "now": self.now, "want": n, "token": token,
                "grace_ms": RESERVATION_GRACE_MS, "check": HOLDER_CHECK}

    async def _reserved(self, q: str, asked: int, token: str, ok: dict[str, Any], *,
                        again: bool) -> None:
        room = self.quotas.setdefault(q, QuotaRoom())
        if ok.get("none"):
            room.missing = True
            return
        n = int(ok["n"])
        room.limits = (int(ok.get("rate", 0)), int(ok.get("window_seconds", 0)),
                       int(ok.get("conc", 0)))
        if n > 0:
            room.tokens.append([token, n])
            room.reserved += n
        # the cap is reached: drop the holders whose record no longer holds a slot, and if
        # any went, reserve again
        holders = codec.listed(ok.get("holders"))
        if n < asked and again and holders and await self.backend._drop_stale(q, holders):
            token = fresh_uuid()[:13]
            raw = await self.backend._fcall("ff_quota_reserve", self.backend._quota_key(q),
                                            self._reserve_args(token, asked - n))
            await self._reserved(q, asked - n, token, codec.decode_answer(raw)["ok"],
                                 again=False)
            return
        if int(ok["left"]) <= 0:
            room.exhausted = True
        if n == 0:
            room.reason, room.retry = str(ok["reason"]), int(ok["retry"])

    async def commit(self) -> None:
        """Reservations become the admissions made; the rest is released."""
        calls = []
        for q, room in self.quotas.items():
            if room.missing or not (room.tokens or room.used):
                continue
            unused = room.reserved - len(room.used)
            # released room wakes claims of this appliance too (no origin: see serve)
            calls.append(("ff_quota_commit", [self.backend._quota_key(q)],
                          {**self.backend._args(), "_o": "", "now": self.now,
                           "tokens": room.tokens, "used": room.used,
                           "wake": unused > 0 and room.exhausted}, []))
            room.tokens, room.used, room.reserved = [], [], 0
        if calls:
            for raw in await self.backend._conn().fcall_many(calls):
                if isinstance(raw, BaseException):
                    raise raw

    def gated(self) -> tuple[str, ...]:
        """The wake keys of the budgets and quotas that held work of this claim back."""
        found = {adm.wake_key("budget", b) for b, budget in self.budgets.items()
                 if budget is not None and budget.breach() is not None}
        found |= {adm.wake_key("quota", q) for q, room in self.quotas.items()
                  if not room.missing and room.reserved == 0 and room.reason}
        return tuple(sorted(found))

    def retry_at(self) -> int | None:
        """When a class held back by a rate window may be claimed again."""
        times = [self.now + r.retry for r in self.quotas.values()
                 if r.reserved == 0 and r.reason == "rate"]
        return min(times) if times else None

    def refuse(self, ex: Execution) -> None:
        """``Gate.refuse``: raise what keeps ``ex``'s class from being admitted."""
        _caps, budgets, quota = adm.split_class(ex.claim_class)
        for b in budgets:
            found = self.budgets.get(b)
            breach = found.breach() if found is not None else None
            if found is not None and breach is not None:
                dim, used, hard = breach
                raise BudgetExhausted.of(budget_id=b, dimension=dim, usage=used,
                                         hard_limit=hard)
        room = self.quotas.get(quota) if quota else None
        if room is not None and not room.missing and room.reserved - len(room.used) <= 0:
            rate, window, conc = room.limits
            why = (f"rate limit {rate} per {window}s window reached; retry in {room.retry} ms"
                   if room.reason == "rate" else f"all {conc} concurrency slots are held")
            raise QuotaExceeded.of(quota_policy_id=quota, why=why, retry_after_ms=room.retry)


class AdmissionMixin:
    """The admission methods of ``ValkeyBackend`` (spec/admission.md)."""

    #: quota partition -> where the reconciler's SSCAN of it goes on
    _quota_cursors: dict[int, str]

    if TYPE_CHECKING:
        from appliance.backend import BackendEnv
        env: BackendEnv
        origin: str

        def _conn(self) -> Connection: ...
        def _args(self, **values: Any) -> dict[str, Any]: ...
        async def _fcall(self, name: str, key: str, args: dict[str, Any],
                         data: bytes | None = None) -> Any: ...
        async def _used_partitions(self) -> list[int]: ...
        def _touched(self, execution_id: str, lanes: set[str]) -> None: ...
        async def get_execution(self, execution_id: str) -> Execution | None: ...

    def _quota_key(self, quota_id: str) -> str:
        return keys.quota(limit_partition(quota_id, self.env.partitions.quota), quota_id)

    def _budget_key(self, budget_id: str) -> str:
        return keys.budget(limit_partition(budget_id, self.env.partitions.budget), budget_id)

    # -- quota holders -------------------------------------------------------------------------
    async def _stale_holders(self, found: list[tuple[str, list[Any]]]
                             ) -> tuple[dict[str, list[list[Any]]], int]:
        """Of holders ``(quota, [eid, seq])``, those whose record no longer holds a slot of
        that quota (by quota), and how many do hold (one pipeline)."""
        if not found:
            return {}, 0

        def read(pipe: Any) -> None:
            for _, (eid, _seq) in found:
                pipe.hmget(keys.record(eid), "quota_policy_id", "ownership_state",
                           "grant_expires_at")

        stale: dict[str, list[list[Any]]] = {}
        holding = 0
        for (q, (eid, seq)), (quota, owner, granted) in zip(
                found, await self._conn().pipeline(read), strict=True):
            if quota is not None and quota.decode() == q and (
                    owner == b"leased" or granted is not None):
                holding += 1
            else:
                stale.setdefault(q, []).append([eid, seq])
        return stale, holding

    async def _drop(self, stale: dict[str, list[list[Any]]]) -> int:
        if not stale:
            return 0
        answers = await self._conn().fcall_many([  # slots freed: claims here look too
            ("ff_quota_drop", [self._quota_key(q)], {**self._args(), "_o": "", "drop": drop},
             []) for q, drop in stale.items()])
        dropped = 0
        for raw in answers:
            if isinstance(raw, BaseException):
                raise raw
            dropped += int(codec.decode_answer(raw)["ok"])
        return dropped

    async def _drop_stale(self, quota_id: str, holders: list[list[Any]]) -> int:
        stale, _ = await self._stale_holders([(quota_id, h) for h in holders])
        return await self._drop(stale)

    # -- claims ----------------------------------------------------------------------------------
    async def _claim_partition(self, partition: int, call: dict[str, Any], args: ClaimArgs,
                               gate: ClaimGate, tasks: list[Task], grants: list[adm.Granted],
                               woken: list[str]) -> None:
        """One partition of a claim: ``ff_claim``, again with verdicts while it asks."""
        for _round in range(VERDICT_ROUNDS):
            want = args.max_tasks - len(tasks) - len(grants)
            if want <= 0:
                return
            ids = fresh_uuids(2 * want) if args.grant_ttl_ms is None else []
            for name in ("bud", "qroom", "qmore"):
                call.pop(name, None)
            call.update(max=want, lease_ids=ids[:want], attempt_ids=ids[want:],
                        **gate.verdicts())
            work = self._work  # type: ignore[attr-defined]
            since = work.view(args.lane_id).version
            got = await self._fcall("ff_claim", keys.partition(partition), call)
            work.seen(args.lane_id, partition, float(got[0]), since)
            woken += [args.lane_id] * int(got[1])
            resolved = [lane.decode() for lane in got[2]]  # flow members the claim ended
            for lane in set(resolved):
                if not lane.startswith("\x1f"):  # a stream's wake key (a member it ended)
                    work.mark(partition, lane)
            woken += resolved
            extra = codec.decode_answer(got[3])
            gate.used({q: codec.listed(e) for q, e in (extra.get("used") or {}).items()})
            gate.limited += int(extra.get("limited") or 0)
            for i in range(4, len(got), 3):
                attempt_type, payload, flat = got[i:i + 3]
                ex = codec.execution_from(flat)
                assert ex is not None
                if attempt_type == b"grant":
                    grants.append(adm.grant_of(ex))
                else:
                    tasks.append((rules.claim_answer(ex, attempt_type.decode(),
                                                     args.lease_ttl_ms), bytes(payload)))
            need = extra.get("need")
            if not need or len(tasks) + len(grants) >= args.max_tasks:
                return
            budgets, quotas = codec.listed(need.get("budgets")), dict(need.get("quotas") or {})
            gate.asked_budgets.update(budgets)
            for q, n in quotas.items():
                gate.asked_quotas[q] = max(gate.asked_quotas.get(q, 0), int(n))
            await gate.resolve(budgets, quotas, args.max_tasks - len(tasks) - len(grants))

    # -- claim grants ----------------------------------------------------------------------------
    async def redeem_grant(self, execution_id: str, args: ClaimArgs) -> Task:
        lease_id, attempt_id = fresh_uuids(2)
        raw = await self._fcall("ff_redeem", keys.record(execution_id), self._args(
            worker_id=args.worker_id, worker_instance_id=args.worker_instance_id,
            lease_ttl_ms=args.lease_ttl_ms, lease_id=lease_id, attempt_id=attempt_id))
        answer = codec.decode_answer(raw[0])
        if answer.get("missing"):
            raise ExecutionNotFound.of(execution_id=execution_id)
        self._touched(execution_id, set(answer.get("w") or ()))
        if "err" in answer:
            raise error_from(answer["err"], answer.get("d") or {})
        ex = codec.execution_from(raw[1])
        assert ex is not None
        return (rules.claim_answer(ex, answer["ok"]["attempt_type"], args.lease_ttl_ms),
                bytes(raw[2]))

    async def reclaim_grant(self, execution_id: str, args: ClaimArgs) -> dict[str, Any]:
        for _ in range(VERDICT_ROUNDS):
            ex = await self.get_execution(execution_id)
            if ex is None:
                raise ExecutionNotFound.of(execution_id=execution_id)
            answer = adm.reclaim_refusal(ex, args)
            if answer is not None:
                return answer
            now = self.env.clock.now_ms()
            gate = ClaimGate(self, now, ex.lane_id)
            _caps, budgets, quota = adm.split_class(ex.claim_class)
            try:
                await gate.resolve(list(budgets), {quota: 1} if quota else {}, 1)
                gate.refuse(ex)
                raw = await self._fcall("ff_reclaim_grant", keys.record(execution_id),
                                        self._args(now=now, worker_id=args.worker_id,
                                                   grant_ttl_ms=args.grant_ttl_ms or 1,
                                                   lane_id=ex.lane_id,
                                                   lease_epoch=ex.current_lease_epoch,
                                                   reclaim_count=ex.lease_reclaim_count))
                done = codec.decode_answer(raw)
                if done.get("missing"):
                    raise ExecutionNotFound.of(execution_id=execution_id)
                if done.get("changed"):
                    continue  # judged on a record that changed since: look again
                if quota:
                    gate.used({quota: [execution_id]})
                ex.grant_worker_id, ex.grant_expires_at = args.worker_id, int(done["ok"])
                return {"status": "granted", **adm.grant_of(ex).wire(), "lane_id": ex.lane_id}
            finally:
                with trio.CancelScope(shield=True):
                    await gate.commit()
        return {"status": "not_reclaimable", "execution_id": execution_id,
                "detail": "it changed while being granted; try again"}

    # -- budgets -----------------------------------------------------------------------------------
    async def create_budget(self, budget: adm.Budget) -> bool:
        raw = await self._fcall("ff_budget_create", self._budget_key(budget.budget_id),
                                self._args(budget_id=budget.budget_id,
                                           fields=codec.budget_fields(budget),
                                           next_reset_at=budget.next_reset_at))
        return bool(codec.decode_answer(raw)["ok"])

    async def get_budget(self, budget_id: str) -> adm.Budget | None:
        raw = await self._conn().fcall("ff_budget_get", self._budget_key(budget_id), {},
                                       read_only=True)
        return codec.budget_from(raw or [])

    async def report_usage(self, budget_id: str, report: adm.UsageReport,
                           lease: tuple[str, Fence] | None) -> adm.UsageAnswer:
        now = self.env.clock.now_ms()
        if lease is not None:  # a worker's report: its lease must hold, the budget be its
            ex = await self.get_execution(lease[0])
            if ex is None:
                raise InvalidHandle.of(execution_id=lease[0])
            expired = _check_lease(ex, lease[1], Ctx(now=now,
                                                     retention_ms=self.env.retention_ms))
            if expired is not None and expired.error is not None:
                raise expired.error
            if budget_id not in ex.budget_ids.split(","):
                raise BudgetNotAttached.of(execution_id=ex.execution_id, budget_id=budget_id)
        raw = await self._fcall("ff_budget_report", self._budget_key(budget_id), self._args(
            now=now, budget_id=budget_id, dims=[[d, str(n)] for d, n in report.dimensions],
            dedup_key=report.dedup_key, at=report.now if report.now is not None else now,
            dedup_ttl_ms=adm.USAGE_DEDUP_TTL_MS, dedup_grace_ms=DEDUP_GRACE_MS))
        answer = codec.decode_answer(raw)
        if "err" in answer:
            raise error_from(answer["err"], answer.get("d") or {})
        ok = answer["ok"]
        if isinstance(ok, str):
            return adm.UsageAnswer(ok)
        [(kind, body)] = ok.items()
        return adm.UsageAnswer(kind, body["dimension"], int(body["current_usage"]),
                               int(body["limit"]))

    async def reset_budget(self, budget_id: str) -> int:
        raw = await self._fcall("ff_budget_reset", self._budget_key(budget_id),
                                self._args(budget_id=budget_id))
        answer = codec.decode_answer(raw)
        if "err" in answer:
            raise error_from(answer["err"], answer.get("d") or {})
        return int(answer["ok"])

    async def reset_due_budgets(self, now: int, limit: int) -> list[str]:
        """Every budget partition's reset index in one pipeline; the earliest ``limit`` reset
        through one FCALL per partition that has any; their ids."""
        if limit <= 0:
            return []
        partitions = range(self.env.partitions.budget)

        def due(pipe: Any) -> None:
            for p in partitions:
                pipe.zrangebyscore(keys.budget_resets(p), "-inf", now, start=0, num=limit,
                                   withscores=True)

        found = await self._conn().pipeline(due)
        entries = sorted((score, member.decode(), p)
                         for p, rows in zip(partitions, found, strict=True)
                         for member, score in rows)[:limit]
        by_partition: dict[int, list[str]] = {}
        for _, bid, p in entries:
            by_partition.setdefault(p, []).append(bid)
        if not by_partition:
            return []
        answers = await self._conn().fcall_many([
            ("ff_budget_reset_due", [keys.budget_resets(p)], {**self._args(ids=ids), "now": now},
             []) for p, ids in by_partition.items()])
        done: list[str] = []
        for raw in answers:
            if isinstance(raw, BaseException):
                raise raw
            done += codec.listed(codec.decode_answer(raw)["ok"])
        return done

    # -- quotas ------------------------------------------------------------------------------------
    async def create_quota(self, quota: adm.Quota) -> bool:
        raw = await self._fcall("ff_quota_create", self._quota_key(quota.quota_policy_id),
                                self._args(quota_policy_id=quota.quota_policy_id,
                                           window_seconds=quota.window_seconds,
                                           max_requests_per_window=quota.max_requests_per_window,
                                           max_concurrent=quota.max_concurrent,
                                           created_at=quota.created_at))
        return bool(codec.decode_answer(raw)["ok"])

    async def get_quota(self, quota_id: str) -> dict[str, Any] | None:
        """The policy with its slots held (each holder checked against its record, the
        stale ones dropped) and its window counted now."""
        now = self.env.clock.now_ms()
        raw = await self._fcall("ff_quota_view", self._quota_key(quota_id),
                                self._args(now=now, grace_ms=RESERVATION_GRACE_MS,
                                           limit=VIEW_HOLDERS))
        ok = codec.decode_answer(raw)["ok"]
        if ok.get("none"):
            return None
        holders = codec.listed(ok.get("holders"))
        stale, holding = await self._stale_holders([(quota_id, h) for h in holders])
        await self._drop(stale)
        active = holding + max(int(ok["held"]) - len(holders), 0)
        quota = adm.Quota(quota_id, int(ok["window_seconds"]),
                          int(ok["max_requests_per_window"]), int(ok["max_concurrent"]),
                          int(ok["created_at"]))
        in_window = int(ok["in_window"]) if quota.max_requests_per_window > 0 else 0
        oldest = ok.get("oldest")
        return quota.view(active, in_window, int(oldest) if oldest is not None else None, now)

    async def reconcile_quotas(self, now: int, limit: int) -> int:
        """Every quota partition, about ``limit`` quotas each (an SSCAN cursor per partition,
        kept between runs): windows trimmed, dead reservations dropped (one FCALL each, one
        pipeline); up to ``limit`` of the holders they list checked against their records
        (one pipeline) and the stale ones dropped."""
        limit = max(limit, 1)
        partitions = range(self.env.partitions.quota)
        cursors = self._quota_cursors
        answers = await self._conn().fcall_many([
            ("ff_quota_sweep", [keys.quotas(p)], {**self._args(), "now": now,
                                                 "grace_ms": RESERVATION_GRACE_MS,
                                                 "limit": limit,
                                                 "cursor": cursors.get(p, "0")}, [])
            for p in partitions])
        gone = 0
        found: list[tuple[str, list[Any]]] = []
        for p, raw in zip(partitions, answers, strict=True):
            if isinstance(raw, BaseException):
                raise raw
            ok = codec.decode_answer(raw)["ok"]
            gone += int(ok["gone"])
            cursors[p] = str(ok["cursor"])
            for quota_id, holders in codec.listed(ok.get("holders")):
                found += [(quota_id, h) for h in codec.listed(holders)]
        if len(found) > limit:  # a different sample each run: every holder's turn comes
            found = random.sample(found, limit)
        stale, _ = await self._stale_holders(found)
        return gone + await self._drop(stale)

    # -- the worker registry ---------------------------------------------------------------------
    async def register_worker(self, worker: adm.Worker, explicit: bool) -> bool:
        raw = await self._fcall("ff_worker_register", keys.worker(worker.worker_instance_id),
                                self._args(worker_id=worker.worker_id,
                                           worker_instance_id=worker.worker_instance_id,
                                           lanes=list(worker.lanes),
                                           capabilities=list(worker.capabilities),
                                           liveness_ttl_ms=worker.liveness_ttl_ms,
                                           registered_at=worker.registered_at,
                                           last_seen_at=worker.last_seen_at,
                                           explicit=explicit))
        answer = codec.decode_answer(raw)
        if "err" in answer:
            raise error_from(answer["err"], answer.get("d") or {})
        return bool(answer["ok"])

    async def _lease_views(self, ids: list[str]) -> tuple[list[int], list[int]]:
        """For each instance: the leases it holds now, its latest renewal or claim (every
        partition's counters, one pipeline)."""
        counts, seen = [0] * len(ids), [0] * len(ids)
        partitions = await self._used_partitions()
        if not ids or not partitions:
            return counts, seen

        def read(pipe: Any) -> None:
            for p in partitions:
                pipe.hmget(keys.partition(p, "wleases"), ids)
                pipe.hmget(keys.partition(p, "wseen"), ids)

        found = await self._conn().pipeline(read)
        for n_row, seen_row in zip(found[0::2], found[1::2], strict=True):
            for i, (n, at) in enumerate(zip(n_row, seen_row, strict=True)):
                if n is not None and int(n) > 0:
                    counts[i] += int(n)
                    seen[i] = max(seen[i], int(at or 0))
        return counts, seen

    async def list_workers(self, lane: str | None, after: str | None,
                           limit: int) -> tuple[list[adm.Worker], str | None]:
        """Registry entries by instance id (after ``after``), of ``lane`` when given, each
        with its leases counted and its latest renewal as a sighting."""
        conn = self._conn()
        start = b"(" + after.encode() if after else b"-"
        found: list[adm.Worker] = []
        while len(found) <= limit:
            ids = await conn.command("ZRANGEBYLEX", keys.WORKERS, start, b"+", "LIMIT", 0,
                                     WORKER_CHUNK)
            if not ids:
                break

            def read(pipe: Any, ids: list[bytes] = ids) -> None:
                for raw in ids:
                    pipe.hgetall(keys.worker(raw.decode()))

            for stored in await conn.pipeline(read):
                w = codec.worker_from(stored)
                if w is not None and (lane is None or lane in w.lanes):
                    found.append(w)
            if len(ids) < WORKER_CHUNK:
                break
            start = b"(" + ids[-1]
        page, more = found[:limit], len(found) > limit
        counts, seen = await self._lease_views([w.worker_instance_id for w in page])
        for w, n, at in zip(page, counts, seen, strict=True):
            w.active_leases = n
            w.last_seen_at = max(w.last_seen_at, at)
        return page, (page[-1].worker_instance_id if more else None)

    async def sweep(self, now: int, limit: int) -> int:
        """Forget registry entries not seen for ``WORKER_FORGET_MS`` past their liveness TTL
        (unless they hold leases)."""
        if limit <= 0:
            return 0
        conn = self._conn()
        rows = await conn.call(conn.client.zrangebyscore, keys.WORKERS_SEEN, "-inf",
                               f"({now - adm.WORKER_FORGET_MS}", start=0, num=limit,
                               withscores=True)
        entries = [(member.decode(), int(score)) for member, score in rows]
        if not entries:
            return 0
        counts, _ = await self._lease_views([i for i, _ in entries])
        gone = [[i, score] for (i, score), n in zip(entries, counts, strict=True) if n == 0]
        if not gone:
            return 0
        raw = await self._fcall("ff_worker_forget", keys.WORKERS_SEEN,
                                self._args(gone=gone))
        return int(codec.decode_answer(raw)["ok"])

    # -- explain -----------------------------------------------------------------------------------
    async def lane_position(self, ex: Execution) -> dict[str, int]:
        """The claimable executions of its lane a claim takes before ``ex``, by claim class:
        in every partition the lane has used, each class's members ordered before ``ex``'s
        (two pipelines)."""
        conn = self._conn()
        hinted = await conn.command("SMEMBERS", keys.lane_hint(ex.lane_id))
        partitions = sorted({solo_partition(ex.lane_id, self.env.partitions.flow)}
                            | {int(p) for p in hinted})

        def classes(pipe: Any) -> None:
            for p in partitions:
                pipe.smembers(keys.lane_classes(p, ex.lane_id))

        found = await conn.pipeline(classes)
        member = f"{9000 - ex.priority:04d}{ex.created_at:016d}{ex.execution_id}".encode()
        sets = [(cls, keys.claim_set(p, ex.lane_id, cls))
                for p, members in zip(partitions, found, strict=True) for cls in members]
        if not sets:
            return {}

        def count(pipe: Any) -> None:
            for _, key in sets:
                pipe.zlexcount(key, b"-", b"(" + member)

        ahead: dict[str, int] = {}
        for (cls, _), n in zip(sets, await conn.pipeline(count), strict=True):
            if int(n):
                name = codec.text(cls)
                ahead[name] = ahead.get(name, 0) + int(n)
        return ahead
