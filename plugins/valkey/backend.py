"""``ValkeyBackend``: every operation is one FCALL of the flowfabric function library.

Operations of the core registry call the library function of the same name (``ff_<name>``),
which runs the Lua mirror of the rule. Claims call the lane's solo partition first, then the
other partitions where the lane has claimable work (``lanes.WorkMap``; the partitions a lane
ever used are a hint set that only grows). Scanners read each used partition's due index; the
engine then applies the scanner's operation, which re-checks due-ness, so several appliances
can share a store.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import trio
import trio_asyncio

from appliance.backend import BackendBase, BackendEnv, Claim
from appliance.core import flows as fl
from appliance.core import suspension as sp
from appliance.core import tokens
from appliance.core import transitions as rules
from appliance.core.admission import Granted, wake_key
from appliance.core.contracts import ClaimArgs, CreateArgs, ListPage
from appliance.core.errors import (
    FlowFabricError,
    InvalidInput,
    StartupError,
    StoreUnavailable,
    Unavailable,
    error_from,
)
from appliance.core.handle import Fence
from appliance.core.ids import fresh_uuid, fresh_uuids, parse_execution_id
from appliance.core.operations import Applied, Ctx, Mutation, Operation, args_to_dict
from appliance.core.outcomes import AlreadySatisfied, Outcome, from_wire
from appliance.core.partitions import flow_partition, solo_partition
from appliance.core.record import Execution
from appliance.core.scanners import Scanner

from . import codec, keys, library
from .admission import AdmissionMixin, ClaimGate, LaneNeeds
from .connection import Connection
from .lanes import WorkMap
from .settings import ValkeySettings
from .streams import StreamsMixin

log = logging.getLogger("flowfabric.valkey")

IDEMPOTENCY_TTL_MS = 24 * 3600 * 1000
#: Extra real time an idempotency key lives past its window; the window itself is judged
#: against the appliance clock inside the library.
IDEMPOTENCY_GRACE_MS = 60_000
CLAIM_WINDOW = 64
PROMOTE_ON_CLAIM = 16
#: How long this appliance trusts its memory of hints it wrote (a store that lost its
#: data gets them back within this time).
KNOWN_MAX_AGE_S = 60.0
PUBSUB_POLL_S = 1.0
#: What a work notification names besides "<partition>:<lane>" (lua/00_library.lua).
WAKE_KINDS = {"b": "budget", "q": "quota", "s": "stream"}
#: ``/healthz`` must answer within 100 ms whatever the store does.
PING_TIMEOUT_S = 0.08


class ValkeyBackend(StreamsMixin, AdmissionMixin, BackendBase):
    name = "valkey"

    def __init__(self, settings: ValkeySettings) -> None:
        self.settings = settings
        self.conn: Connection | None = None
        self.env = BackendEnv()
        self._work = WorkMap()
        #: Names this appliance in the work notifications its calls publish.
        self.origin = fresh_uuid()[:8]
        self._known: set[tuple[str, int]] = set()
        self._known_since = time.monotonic()
        self._used: set[int] = set()
        #: The operations the loaded library has a function for.
        self._operations: frozenset[str] = frozenset()
        self._needs = LaneNeeds()
        self._quota_cursors: dict[int, str] = {}

    def describe(self) -> str:
        return f"valkey {self.settings.describe()}"

    # -- lifecycle ------------------------------------------------------------------------
    async def prepare(self, env: BackendEnv) -> None:
        self.env = env
        self.conn = Connection(self.settings, library.load)
        try:
            await self.conn.command("PING")
            infos = await self.conn.on_every_node("INFO", "server")
            library.check_server_versions(infos)
            await library.check_partitions(self.conn, env.partitions)
            await library.ensure(self.conn)
            self._operations = await library.operations(self.conn)
        except StoreUnavailable as exc:
            await self.close()
            raise StartupError(f"cannot reach the Valkey store at {self.settings.describe()} "
                               f"({exc.__cause__}); start it or set FF_VALKEY_URL") from exc
        except BaseException:
            await self.close()
            raise

    async def ping(self) -> None:
        """``PING`` within 80 ms; at once while the circuit is open."""
        conn = self._conn()
        with trio.move_on_after(PING_TIMEOUT_S):
            await conn.command("PING")
            return
        conn.circuit.suspect()  # busy, or gone: the probe tells which
        raise StoreUnavailable(f"the Valkey store at {self.settings.describe()} did not answer "
                               f"within {PING_TIMEOUT_S * 1000:.0f} ms; retry the request")

    async def close(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            await conn.close()

    def _conn(self) -> Connection:
        if self.conn is None:
            raise StoreUnavailable("the Valkey backend is closed")
        return self.conn

    def _args(self, **values: Any) -> dict[str, Any]:
        return {"now": self.env.clock.now_ms(), "retention_ms": self.env.retention_ms,
                "_o": self.origin, **values}

    async def _fcall(self, name: str, key: str, args: dict[str, Any],
                     data: bytes | None = None) -> Any:
        return await self._conn().fcall(name, key, args, data)

    # -- where a lane's work lives ----------------------------------------------------------
    async def _remember(self, places: set[tuple[str, int]]) -> None:
        """Before work of a lane first lands on a partition: claims and scanners must find
        it even if this appliance dies right after (hints are only ever added)."""
        if time.monotonic() - self._known_since > KNOWN_MAX_AGE_S:
            self._known, self._known_since = set(), time.monotonic()
        new = places - self._known
        if not new:
            return

        def record(pipe: Any) -> None:
            for lane, partition in new:
                pipe.sadd(keys.USED_PARTITIONS, partition)
                if partition != solo_partition(lane, self.env.partitions.flow):
                    pipe.sadd(keys.lane_hint(lane), partition)

        await self._conn().pipeline(record)
        self._known |= new
        self._used |= {partition for _, partition in new}

    async def _claim_order(self, lane: str, solo: int, now: int) -> list[int]:
        if self._work.stale(lane):
            await self._probe(lane, solo)
        return self._work.order(lane, solo, now)

    async def _probe(self, lane: str, solo: int) -> None:
        """Ask the solo partition and every other partition the lane has used when its
        work there is next claimable."""
        view = self._work.view(lane)
        since, view.probing = view.version, True
        try:
            hinted = sorted({solo} | {int(p) for p in await self._conn().command(
                "SMEMBERS", keys.lane_hint(lane))})

            def ask(pipe: Any) -> None:
                for partition in hinted:
                    pipe.zscore(keys.partition(partition, "lanes"), lane)

            scores = await self._conn().pipeline(ask)
        finally:
            view.probing = False
        self._work.probed(lane, {p: float(s) for p, s in zip(hinted, scores, strict=True)
                                 if s is not None}, since)

    def _touched(self, execution_id: str, lanes: set[str]) -> None:
        """A local operation changed work of ``lanes`` on the execution's partition (made
        it claimable, or claimable later: a retry's backoff, a delay): the claims of those
        lanes, and only those, look there again."""
        partition = parse_execution_id(execution_id).partition
        for lane in lanes:
            if not lane.startswith("\x1f"):  # a wake key (admission.wake_key), not a lane
                self._work.mark(partition, lane)

    async def _used_partitions(self) -> list[int]:
        raw = await self._conn().command("SMEMBERS", keys.USED_PARTITIONS)
        self._used |= {int(p) for p in raw}
        return sorted(self._used)

    # -- state changes ----------------------------------------------------------------------
    def supports(self, op: Operation[Any]) -> bool:
        return op.name in self._operations

    async def apply(self, mutations: Sequence[Mutation]) -> list[Applied]:
        """One FCALL per partition the mutations touch, all in one pipeline (one round
        trip); each mutation is atomic alone, as through its own function."""
        answers: dict[int, Applied] = {}
        items: list[tuple[int, Mutation, str, dict[str, Any], bytes | None]] = []
        for i, m in enumerate(mutations):
            if m.op.name not in self._operations:
                answers[i] = Applied(error=Unavailable(m.op.name, self.name))
                continue
            call = {"_op": m.op.name, **args_to_dict(m.args)}
            data = None
            for name, value in list(call.items()):
                if isinstance(value, bytes):  # the bytes travel beside the JSON
                    call["_bytes"], data = name, call.pop(name)
            items.append((i, m, keys.record(m.execution_id), call, data))
        for (i, m, _, _, _), raw in zip(items, await self._many("ff_apply_many", [
                (m.op.lua, key, call, data) for _, m, key, call, data in items]), strict=True):
            answers[i] = self._applied(m, raw)
        return [answers[i] for i in range(len(mutations))]

    async def _many(self, many: str, steps: Sequence[tuple[str, str, dict[str, Any],
                                                          bytes | None]]) -> list[Any]:
        """Steps ``(function, key, args, bytes)``: one partition's single step calls its
        own function, several call ``many`` (``ff_apply_many``/``ff_create_many``) once;
        the answers, decoded, in the order of ``steps``."""
        if not steps:
            return []
        common = self._args()
        groups: dict[str, list[int]] = {}
        for i, (_, key, _, _) in enumerate(steps):
            groups.setdefault(key[:key.index("}") + 1], []).append(i)
        calls = []
        for members in groups.values():
            if len(members) == 1:
                fn, key, args, data = steps[members[0]]
                calls.append((fn, [key], {**common, **args}, [] if data is None else [data]))
            else:
                calls.append((many, [steps[i][1] for i in members],
                              {**common, "items": [codec.without_nulls(steps[i][2])
                                                   for i in members]},
                              [steps[i][3] or b"" for i in members]))
        answers: list[Any] = [None] * len(steps)
        for members, raw in zip(groups.values(), await self._conn().fcall_many(calls),
                                strict=True):
            if isinstance(raw, BaseException):
                raise raw
            decoded = codec.decode_answer(raw)
            for i, answer in zip(members, decoded["a"] if len(members) > 1 else [decoded],
                                 strict=True):
                answers[i] = answer
        return answers

    def _applied(self, m: Mutation, answer: dict[str, Any]) -> Applied:
        woken = tuple(answer.get("w") or ())
        self._touched(m.execution_id, {*woken, *([answer["l"]] if "l" in answer else [])})
        if answer.get("missing"):
            return Applied(error=m.op.missing_error(m.execution_id))
        if answer.get("unsupported"):
            return Applied(error=Unavailable(m.op.name, self.name))
        if "err" in answer:
            return Applied(error=error_from(answer["err"], answer.get("d") or {}), woken=woken)
        outcome = answer.get("ok")
        if not outcome:
            return Applied(None, woken=woken)
        return Applied(from_wire(outcome, m.op.plain), woken=woken)

    async def create(self, batch: Sequence[CreateArgs]) -> list[Applied]:
        """After the hints that let claims find the work: one FCALL per partition, all in
        one pipeline."""
        ctx = Ctx(now=self.env.clock.now_ms(), retention_ms=self.env.retention_ms)
        steps = []
        for args in batch:
            ex = rules.create(args, ctx)
            call: dict[str, Any] = {"row": codec.row_of(ex), "now": ex.created_at}
            if args.idempotency_key is not None:
                call.update(idempotency_key=args.idempotency_key,
                            idempotency_ttl_ms=args.policy.dedup_window_ms or IDEMPOTENCY_TTL_MS,
                            idempotency_grace_ms=IDEMPOTENCY_GRACE_MS)
            steps.append(("ff_create", keys.record(ex.execution_id), call, args.input_payload))
        await self._remember({(args.lane_id, args.partition_id) for args in batch})
        answers = await self._many("ff_create_many", steps)
        for args in batch:
            self._work.mark(args.partition_id, args.lane_id)  # work (due now or later) is there
        return [Applied(error=error_from(a["err"], a.get("d") or {})) if "err" in a
                else Applied(from_wire(a["ok"]), woken=tuple(a.get("w") or ())) for a in answers]

    async def get_execution(self, execution_id: str) -> Execution | None:
        return codec.execution_from(await self._conn().call(self._conn().client.hgetall,
                                                            keys.record(execution_id)))

    async def get_result(self, execution_id: str) -> tuple[Execution, bytes | None] | None:
        found = await self._conn().fcall("ff_read", keys.record(execution_id), {},
                                         read_only=True)
        if found is None:
            return None
        ex = codec.execution_from(found[0])
        if ex is None:
            return None
        return ex, (bytes(found[1]) if ex.has_result and found[1] is not None else None)

    async def list_executions(self, partition: int, cursor: str | None, limit: int) -> ListPage:
        if limit <= 0:
            return ListPage([], None)
        start = b"(" + cursor.encode() if cursor else b"-"
        raw = await self._conn().command("ZRANGEBYLEX", keys.partition(partition), start, b"+",
                                         "LIMIT", 0, limit + 1)
        ids = [r.decode() for r in raw]
        more = len(ids) > limit
        ids = ids[:limit]
        return ListPage(ids, ids[-1] if more else None)

    # -- claiming -------------------------------------------------------------------------
    async def claim(self, args: ClaimArgs) -> Claim:
        """The lane's partitions in turn (``_claim_partition``: one FCALL each unless limited
        work needs verdicts, spec/admission.md); grants instead of leases with
        ``grant_ttl_ms``."""
        call = self._args(lane_id=args.lane_id, capabilities=",".join(args.capabilities),
                          worker_id=args.worker_id, worker_instance_id=args.worker_instance_id,
                          lease_ttl_ms=args.lease_ttl_ms, window=CLAIM_WINDOW,
                          promote_limit=PROMOTE_ON_CLAIM, grant_ttl_ms=args.grant_ttl_ms)
        solo = solo_partition(args.lane_id, self.env.partitions.flow)
        woken: list[str] = []
        tasks: list[tuple[dict[str, Any], bytes]] = []
        grants: list[Granted] = []
        gate = ClaimGate(self, call["now"], args.lane_id)
        hint = self._needs.get(args.lane_id)
        try:
            order = await self._claim_order(args.lane_id, solo, call["now"])
            if hint is not None and order:  # its last claim had to decide these: first
                await gate.resolve(hint[0], hint[1], args.max_tasks)
            for partition in order:
                await self._claim_partition(partition, call, args, gate, tasks, grants, woken)
                if len(tasks) + len(grants) >= args.max_tasks:
                    break
        finally:
            with trio.CancelScope(shield=True):
                await gate.commit()
        self._needs.after(args.lane_id, gate, hint is not None)
        return Claim(tuple(tasks), tuple(woken), tuple(grants), gate.retry_at(), gate.gated())

    # -- flows (spec/flows.md): every change one FCALL on the flow's partition --------------
    def _flow_key(self, flow_id: str) -> tuple[int, str]:
        partition = flow_partition(flow_id, self.env.partitions.flow)
        return partition, keys.flow(partition, flow_id)

    def _flow_answer(self, partition: int, raw: Any) -> tuple[dict[str, Any], tuple[str, ...]]:
        """A flow function's answer, and the lanes it made claimable (marked for claims); a
        refusal raises."""
        answer = codec.decode_answer(raw)
        woken = tuple(answer.get("w") or ())
        for lane in set(woken):
            if not lane.startswith("\x1f"):  # a wake key (admission.wake_key), not a lane
                self._work.mark(partition, lane)
        if "err" in answer:
            raise error_from(answer["err"], answer.get("d") or {})
        if "invalid" in answer:
            raise InvalidInput(answer["invalid"])
        return answer, woken

    async def _flow_call(self, name: str, flow_id: str, args: dict[str, Any],
                         *data: bytes, more_keys: Sequence[str] = ()
                         ) -> tuple[dict[str, Any], tuple[str, ...]]:
        partition, key = self._flow_key(flow_id)
        raw = await self._conn().fcall(name, [key, *more_keys],
                                       self._args(**{**args, "flow_id": flow_id}), *data)
        return self._flow_answer(partition, raw)

    async def create_flow(self, sub: fl.FlowSubmission) -> tuple[Outcome, tuple[str, ...]]:
        """The flow, and with nodes the whole DAG, in one FCALL, all or nothing. The records
        are made here as the SQL stores make them (``flows.dag_records``: gated when they have
        inbound edges), ids minted here; the library refuses ids already taken."""
        now = self.env.clock.now_ms()
        ctx = Ctx(now=now, retention_ms=self.env.retention_ms)
        flow = fl.Flow(sub.flow_id, sub.partition_id, sub.flow_kind, sub.namespace,
                       fl.FlowState.OPEN, graph_revision=len(sub.nodes) + len(sub.edges),
                       node_count=len(sub.nodes), edge_count=len(sub.edges), created_at=now,
                       last_mutation_at=now)
        args: dict[str, Any] = {"now": now, "flow": codec.without_nulls(fl.row_of(flow))}
        if not sub.dag:
            answer, _ = await self._flow_call("ff_flow_create", sub.flow_id, args)
            if "Created" in answer["ok"]:
                return fl.FlowCreated(sub.flow_id), ()
            return fl.FlowAlreadySatisfied(sub.flow_id), ()
        made, inbound = fl.dag_records(sub, ctx)
        # Edges travel compact (up to 100,000 of them): [upstream node, downstream node (their
        # places in nodes, from 1), edge id, dependency_kind(, data_passing_ref)]; the library
        # writes each as the Edge the SQL stores insert (applied: unsatisfied).
        place = {key: i for i, key in enumerate(made, 1)}
        specs = dict(sub.groups)
        args.update(
            nodes=[[key, codec.row_of(ex)] for key, ex in made.items()],
            edges=[[place[e.upstream], place[e.downstream], edge_id, e.dependency_kind,
                    *(() if e.data_passing_ref is None else (e.data_passing_ref,))]
                   for edge_id, e in zip(fresh_uuids(len(sub.edges)), sub.edges, strict=True)],
            groups=[codec.without_nulls(fl.row_of(fl.EdgeGroup(
                made[key].execution_id, sub.flow_id, spec.policy, spec.k, spec.on_satisfied,
                n=count))) for key, count in inbound.items()
                for spec in [specs.get(key, fl.GroupSpec())]])
        await self._remember({(a.lane_id, a.partition_id) for _, a in sub.nodes})
        answer, woken = await self._flow_call("ff_flow_create", sub.flow_id, args,
                                              *(a.input_payload or b"" for _, a in sub.nodes))
        for _, a in sub.nodes:
            self._work.mark(a.partition_id, a.lane_id)
        if "Created" in answer["ok"]:
            return fl.DagCreated(sub.flow_id, {k: ex.execution_id for k, ex in made.items()},
                                 flow.graph_revision), woken
        body = answer["ok"]["AlreadySatisfied"]
        return fl.DagAlreadySatisfied(sub.flow_id, dict(body.get("executions") or {}),
                                      body["graph_revision"]), ()

    async def add_flow_member(self, flow_id: str, execution_id: str) -> Outcome:
        answer, _ = await self._flow_call("ff_flow_add_member", flow_id,
                                          {"execution_id": execution_id},
                                          more_keys=[keys.record(execution_id)])
        ok = answer["ok"]
        if "Added" in ok:
            return fl.Added(**ok["Added"])
        return fl.AlreadyMember(**ok["AlreadyMember"])

    async def stage_edge(self, args: fl.StageArgs) -> Outcome:
        answer, _ = await self._flow_call("ff_flow_stage", args.flow_id, codec.without_nulls(
            fl.row_of(args)))
        return fl.Staged(**answer["ok"]["Staged"])

    async def apply_edge(self, args: fl.ApplyEdgeArgs) -> tuple[Outcome | str, tuple[str, ...]]:
        answer, woken = await self._flow_call("ff_flow_apply", args.flow_id,
                                              codec.without_nulls(fl.row_of(args)))
        if "check_apply" in answer:  # core words the refusal
            found = answer["check_apply"]
            flow = codec.flow_from(found["flow"])
            assert flow is not None
            fl.check_apply(args, flow, fl.Edge(**{c: found["edge"].get(c)
                                                  for c in fl.EDGE_COLUMNS}))
            raise InvalidInput(f"edge {args.edge_id}: the call does not match the staged edge")
        if "check_not_delayed" in answer:
            child = codec.execution_from(answer["check_not_delayed"])
            assert child is not None
            fl.check_not_delayed(child)
            raise InvalidInput(f"downstream_execution_id: {child.execution_id} is delayed")
        ok = answer["ok"]
        if ok == "AlreadyApplied":
            return ok, ()
        return fl.EdgeApplied(ok["Applied"]["unsatisfied_count"]), woken

    async def set_edge_group(self, flow_id: str, downstream: str,
                             spec: fl.GroupSpec) -> Outcome | str:
        answer, _ = await self._flow_call("ff_flow_set_group", flow_id, {
            "downstream_execution_id": downstream, "policy": str(spec.policy), "k": spec.k,
            "on_satisfied": str(spec.on_satisfied)})
        ok = answer["ok"]
        if ok == "AlreadySet":
            return ok
        return fl.GroupSet(ok["Set"]["downstream_execution_id"])

    async def cancel_flow(self, flow_id: str, reason: str, policy: str) -> fl.CancelHeader:
        answer, _ = await self._flow_call("ff_flow_cancel", flow_id,
                                          {"reason": reason, "policy": str(policy)})
        ok = answer["ok"]
        return fl.CancelHeader(ok["policy"], codec.listed(ok["members"]),
                               codec.listed(ok["owed"]), bool(ok["already"]))

    async def cancel_flow_members(self, flow_id: str, ids: list[str], reason: str) -> list[str]:
        answer, _ = await self._flow_call("ff_flow_cancel_members", flow_id,
                                          {"ids": list(ids), "reason": reason})
        return codec.listed(answer["ok"])

    async def _earliest_due(self, index: str, now: int, limit: int
                            ) -> list[tuple[float, str, int]]:
        """The ``limit`` earliest members due by ``now`` of every partition's ``index``
        (one pipeline): ``(score, member, partition)``, earliest first."""
        partitions = range(self.env.partitions.flow)

        def due(pipe: Any) -> None:
            for p in partitions:
                pipe.zrangebyscore(keys.partition(p, index), "-inf", now, start=0, num=limit,
                                   withscores=True)

        found = await self._conn().pipeline(due)
        return sorted((score, member.decode(), p)
                      for p, rows in zip(partitions, found, strict=True)
                      for member, score in rows)[:limit]

    async def owed_flow_cancels(self, now: int, limit: int) -> dict[str, tuple[str, list[str]]]:
        """Every partition's backlog in one pipeline, earliest first; the reasons in a
        second."""
        if limit <= 0:
            return {}
        entries = await self._earliest_due("flow_cancel", now, limit)
        flows: dict[str, int] = {}
        for _, member, p in entries:
            flows.setdefault(member.partition("|")[0], p)

        def reasons(pipe: Any) -> None:
            for flow_id, p in flows.items():
                pipe.hget(keys.flow(p, flow_id), "cancel_reason")

        stored = dict(zip(flows, await self._conn().pipeline(reasons), strict=True))
        owed: dict[str, tuple[str, list[str]]] = {}
        for _, member, _ in entries:
            flow_id, _, eid = member.partition("|")
            reason = stored[flow_id].decode() if stored[flow_id] else fl.DEFAULT_CANCEL_REASON
            owed.setdefault(flow_id, (reason, []))[1].append(eid)
        return owed

    async def reconcile_dependencies(self, limit: int) -> tuple[int, list[str]]:
        """The partitions with unsatisfied edges (one pipeline), then one FCALL on each of
        them (one pipeline): applied edges still unresolved whose upstream ended."""
        partitions = range(self.env.partitions.flow)

        def count(pipe: Any) -> None:
            for p in partitions:
                pipe.scard(keys.partition(p, "flow_open"))

        busy = [p for p, n in zip(partitions, await self._conn().pipeline(count), strict=True)
                if n]
        if not busy or limit <= 0:
            return 0, []
        args = self._args(limit=limit)
        answers = await self._conn().fcall_many([("ff_flow_reconcile", [keys.partition(p)], args,
                                                  []) for p in busy])
        resolved, woken = 0, []
        for p, raw in zip(busy, answers, strict=True):
            if isinstance(raw, BaseException):
                raise raw
            answer, lanes = self._flow_answer(p, raw)
            resolved += int(answer["ok"])
            woken += lanes
        return resolved, woken

    async def describe_flow(self, flow_id: str) -> fl.FlowView | None:
        _, key = self._flow_key(flow_id)
        found = await self._conn().fcall("ff_flow_describe", key, {}, read_only=True)
        if found is None:
            return None
        head = codec.decode_answer(found[0])
        flow = codec.flow_from(head["flow"])
        if flow is None:
            return None
        members = [{"execution_id": eid, "public_state": state, "node_key": key}
                   for eid, state, key in codec.listed(head["members"])]
        edges = sorted((codec.edge_from(raw) for raw in found[1]), key=lambda e: e.edge_id)
        groups = sorted((codec.group_from(raw) for raw in found[2]),
                        key=lambda g: g.downstream_execution_id)
        return fl.FlowView(flow, members, edges, groups)

    async def list_flows(self, namespace: str | None, cursor: str | None,
                         limit: int) -> tuple[list[fl.Flow], str | None]:
        """Every partition's index in one pipeline, merged by flow id; the records in a
        second."""
        partitions = range(self.env.partitions.flow)
        start = b"(" + cursor.encode() if cursor else b"-"

        def page(pipe: Any) -> None:
            for p in partitions:
                pipe.zrangebylex(keys.flows(p, namespace), start, b"+", start=0, num=limit + 1)

        found = await self._conn().pipeline(page)
        ids = sorted((raw.decode(), p) for p, rows in zip(partitions, found, strict=True)
                     for raw in rows)[:limit + 1]

        def records(pipe: Any) -> None:
            for flow_id, p in ids:
                pipe.hgetall(keys.flow(p, flow_id))

        flows = [flow for flow in (codec.flow_from(raw) for raw in
                                   await self._conn().pipeline(records)) if flow is not None]
        more = len(flows) > limit
        flows = flows[:limit]
        return flows, (flows[-1].flow_id if more and flows else None)

    # -- suspension and signals (spec/suspension.md): each call one FCALL on the execution's
    # partition; the keystore has a replica on every partition ------------------------------
    def _keys_key(self, partition: int) -> str:
        return keys.partition(partition, "wpkeys")

    async def seed_waitpoint_keys(self, kid: str,
                                  secret_hex: str | None) -> tuple[str, tokens.Keystore]:
        """Partition 0 decides (``tokens.seed``); every other partition with no keystore
        gets a copy of it, one pipeline. ``differs`` if any partition holds another key."""
        args = self._args(kid=kid, secret=secret_hex, generated=tokens.generate_secret())
        first = codec.decode_answer(await self._fcall("ff_wp_keys_seed", self._keys_key(0),
                                                      args))["ok"]
        status, doc = first["status"], first["keys"]
        replica = {"current": doc["current"], "secrets": doc["secrets"] or {},
                   "expires": doc["expires"] or {}}
        others = range(1, self.env.partitions.flow)
        answers = await self._conn().fcall_many([
            ("ff_wp_keys_seed", [self._keys_key(p)], {**args, "replica": replica}, [])
            for p in others]) if others else []
        for raw in answers:
            if isinstance(raw, BaseException):
                raise raw
            if codec.decode_answer(raw)["ok"]["status"] == "differs":
                status = "differs"
        return status, codec.keystore_from(doc)

    async def waitpoint_keys(self, execution_id: str) -> tokens.Keystore:
        partition = parse_execution_id(execution_id).partition
        return codec.keystore_from_hash(await self._conn().call(
            self._conn().client.hgetall, self._keys_key(partition)))

    async def rotate_waitpoint_secret(self, kid: str, secret_hex: str, grace_ms: int
                                      ) -> list[tuple[int, tokens.Rotation | FlowFabricError]]:
        """Every partition's keystore in one pipeline; one result per partition."""
        now = self.env.clock.now_ms()
        args = {**self._args(kid=kid, secret=secret_hex, grace_end=str(now + grace_ms)),
                "now": now}
        partitions = range(self.env.partitions.flow)
        answers = await self._conn().fcall_many([("ff_wp_keys_rotate", [self._keys_key(p)],
                                                  args, []) for p in partitions])
        results: list[tuple[int, tokens.Rotation | FlowFabricError]] = []
        for p, raw in zip(partitions, answers, strict=True):
            if isinstance(raw, BaseException):
                results.append((p, FlowFabricError(f"partition {p}: the store refused the "
                                                   f"rotation: {raw}")))
                continue
            answer = codec.decode_answer(raw)
            if "err" in answer:
                results.append((p, error_from(answer["err"], answer.get("d") or {})))
                continue
            ok = answer["ok"]
            results.append((p, tokens.Rotation(ok["kind"], ok["new_kid"], ok.get("previous_kid"),
                                               ok["gc_count"])))
        return results

    async def _on_execution(self, name: str, execution_id: str, args: dict[str, Any],
                            data: bytes | None = None) -> dict[str, Any]:
        """One suspension function on the execution's partition: its answer, a refusal
        raised (after the lanes it made claimable are marked)."""
        raw = await self._fcall(name, keys.record(execution_id), self._args(**args), data)
        return self._wp_answer(execution_id, raw)

    def _wp_answer(self, execution_id: str, raw: Any) -> dict[str, Any]:
        answer = codec.decode_answer(raw)
        self._touched(execution_id, {*(answer.get("w") or ()),
                                     *([answer["l"]] if "l" in answer else [])})
        if "err" in answer:
            raise error_from(answer["err"], answer.get("d") or {})
        return answer

    async def create_waitpoint(self, execution_id: str, args: sp.WaitpointArgs) -> sp.Waitpoint:
        answer = await self._on_execution("ff_wp_create", execution_id, args_to_dict(args))
        made = codec.waitpoint_from(answer["ok"])
        assert made is not None
        return made

    async def suspend(self, execution_id: str, args: sp.SuspendArgs) -> sp.SuspendResult:
        """The answer and, when buffered signals already satisfy it, those signals (rows
        beside the JSON: payloads are bytes)."""
        raw = await self._fcall("ff_wp_suspend", keys.record(execution_id),
                                self._args(**args_to_dict(args)))
        ok = self._wp_answer(execution_id, raw[0])["ok"]
        result = sp.SuspendResult(ok["kind"], ok["suspension_id"], codec.listed(ok["waitpoints"]),
                                  codec.listed(ok.get("signal_ids")))
        result.signals = [codec.signal_from(row) for row in raw[1:]]
        return result

    async def wait_children(self, execution_id: str, fence: Fence) -> Outcome:
        answer = await self._on_execution("ff_wp_wait_children", execution_id, {"fence": {
            "lease_id": fence.lease_id, "lease_epoch": fence.lease_epoch,
            "attempt_id": fence.attempt_id}})
        ok = answer["ok"]
        if "WaitingChildren" in ok:
            return sp.WaitingChildren(**ok["WaitingChildren"])
        return AlreadySatisfied(**ok["AlreadySatisfied"])

    async def deliver_signal(self, execution_id: str, args: sp.SignalArgs
                             ) -> tuple[sp.SignalAnswer, tuple[str, ...]]:
        call = args_to_dict(args)
        data = call.pop("payload")
        call["has_payload"] = data is not None
        answer = await self._on_execution("ff_wp_deliver", execution_id, call, data)
        ok = answer["ok"]
        return (sp.SignalAnswer(ok["kind"], ok["signal_id"], ok.get("effect")),
                tuple(answer.get("w") or ()))

    async def list_waitpoints(self, execution_id: str
                              ) -> tuple[Execution, list[sp.Waitpoint]] | None:
        found = await self._conn().fcall("ff_wp_list", keys.record(execution_id), {},
                                         read_only=True)
        ex = codec.execution_from(found[0]) if found else None
        if ex is None:
            return None
        return ex, [wp for wp in map(codec.waitpoint_from, found[1:]) if wp is not None]

    async def get_waitpoint(self, execution_id: str, waitpoint_id: str) -> sp.Waitpoint | None:
        partition = parse_execution_id(execution_id).partition
        wp = codec.waitpoint_from(await self._conn().call(
            self._conn().client.hgetall, keys.waitpoint(partition, waitpoint_id)))
        return wp if wp is not None and wp.execution_id == execution_id else None

    async def resume_signals(self, execution_id: str) -> list[sp.Signal]:
        rows = await self._conn().fcall("ff_wp_resume_signals", keys.record(execution_id), {},
                                        read_only=True)
        return [codec.signal_from(row) for row in rows or ()]

    async def expire_pending_waitpoints(self, now: int, limit: int) -> int:
        """Every partition's pending-expiry index in one pipeline; the earliest ``limit``
        close through one FCALL per partition that has any (a second pipeline)."""
        if limit <= 0:
            return 0
        entries = await self._earliest_due("wp_pending", now, limit)
        by_partition: dict[int, list[str]] = {}
        for _, wid, p in entries:
            by_partition.setdefault(p, []).append(wid)
        if not by_partition:
            return 0
        answers = await self._conn().fcall_many([
            ("ff_wp_expire_pending", [keys.partition(p)], {**self._args(ids=ids), "now": now}, [])
            for p, ids in by_partition.items()])
        closed = 0
        for raw in answers:
            if isinstance(raw, BaseException):
                raise raw
            closed += int(codec.decode_answer(raw)["ok"])
        return closed

    # -- scanners -------------------------------------------------------------------------
    async def due(self, scanner: Scanner, now: int, limit: int) -> list[str]:
        """Each used partition's index of ``scanner``, earliest first."""
        partitions = await self._used_partitions()
        if not partitions:
            return []

        def due(pipe: Any) -> None:
            for p in partitions:
                pipe.zrangebyscore(keys.partition(p, scanner.index), "-inf", now, start=0,
                                   num=limit, withscores=True)

        found = await self._conn().pipeline(due)
        candidates = sorted((score, member.decode()) for rows in found for member, score in rows)
        return [eid for _, eid in candidates][:limit]

    # -- wake-ups from other appliances ---------------------------------------------------------
    async def serve(self, notify: Callable[[str], None], *,
                    task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The library publishes a lane on ``ff:work`` whenever it made work claimable.

        The store's circuit probes from here too (this task runs as long as the appliance).
        """
        conn = self._conn()
        async with trio.open_nursery() as nursery:
            await nursery.start(conn.circuit.run)
            task_status.started()
            await self._deliver_notifications(conn, notify)

    async def _deliver_notifications(self, conn: Connection,
                                     notify: Callable[[str], None]) -> None:
        pubsub = conn.client.pubsub()
        try:
            subscribed = False
            while True:
                try:
                    if not subscribed:
                        await conn.call(pubsub.subscribe, keys.WORK_CHANNEL)
                        subscribed = True
                    message = await conn.call(pubsub.get_message,
                                              ignore_subscribe_messages=True,
                                              timeout=PUBSUB_POLL_S)
                except StoreUnavailable as exc:
                    if subscribed or not conn.circuit.is_open:
                        log.warning("work notifications paused: %s", exc)
                    subscribed = False
                    if conn.circuit.is_open:
                        await conn.circuit.wait_closed()  # subscribe again once it answers
                    else:
                        await trio.sleep(PUBSUB_POLL_S)
                    continue
                if message and message.get("type") == "message":
                    origin, _, where = message["data"].decode().partition("|")
                    if origin == self.origin:  # this appliance woke its own claims
                        continue
                    kind, _, rest = where.partition(":")
                    if kind in WAKE_KINDS:  # a budget reset, a quota slot freed: the claims
                        # they held back look again; a stream appended to or closed: its tails
                        notify(wake_key(WAKE_KINDS[kind], rest))
                    else:
                        self._work.mark(int(kind), rest)
                        notify(rest)
        finally:
            with trio.CancelScope(shield=True), contextlib.suppress(Exception):
                await trio_asyncio.aio_as_trio(pubsub.aclose, loop=conn.loop)()
