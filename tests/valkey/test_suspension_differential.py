"""Differential test of suspension: random plans of creates, claims, waitpoints, suspends on
every kind of resume condition, signals (good and bad tokens, idempotency keys, payloads,
limits), operator resumes, the suspension timeout, the pending-waitpoint expiry, cancels,
completes, retries, purges and waits for children give the same answers and leave the same
records, waitpoints, signals and attempts whether the SQL code applies them (the memory
store) or the Lua library does (a real Redis).

Both stores run side by side in one process: each step goes to one, then the other, and the
answers are compared at once; the whole state of the plan's executions at its end. Ids the
test mints (executions, waitpoints, signals) are deterministic; the ones a store draws
(leases, attempts) are compared by the order they appear in. Set FF_SUSPENSION_EXAMPLES to
run more plans (FF_SUSPENSION_SEED to start elsewhere).
"""

from __future__ import annotations

import json
import os
import random
import re
import uuid
from typing import Any

import trio
from backend_setups.valkey import redis_cli
from flowfabric_valkey import codec
from flowfabric_valkey import keys as vkeys

from appliance.core import conditions as cond
from appliance.core import suspension as sp
from appliance.core import tokens
from appliance.core import transitions as rules
from appliance.core.contracts import ClaimArgs, CreateArgs
from appliance.core.errors import FlowFabricError
from appliance.core.handle import Fence
from appliance.core.operations import Mutation
from appliance.core.partitions import PartitionConfig, flow_partition
from appliance.core.policy import parse_policy
from appliance.core.scanners import BY_NAME
from appliance.testing import Harness, open_harness

EXAMPLES = int(os.environ.get("FF_SUSPENSION_EXAMPLES", "200"))
FIRST_SEED = int(os.environ.get("FF_SUSPENSION_SEED", "0"))
SECRET = "5e" * 32
KID = "k1"
PARTITION = 7
EXECUTIONS = 2
POLICIES = {
    "none": None,
    "retry": {"retry_policy": {"max_retries": 1, "backoff": {"type": "fixed", "delay_ms": 100}}},
    "no_reclaim": {"max_reclaim_count": 0},
    "deadline": {"timeout_policy": {"execution_deadline_ms": 30_000}},
}
KEYS = ("a", "b", "c")
CONDITIONS: list[Any] = [
    {"Single": {"waitpoint_key": "a"}},
    {"Single": {"waitpoint_key": "a", "matcher": {"ByName": "go"}}},
    {"Single": {"waitpoint_key": "b", "matcher": "Wildcard"}},
    {"Composite": {"kind": "AllOf", "members": [{"Single": {"waitpoint_key": "a"}},
                                                 {"Single": {"waitpoint_key": "b"}}]}},
    {"Composite": {"kind": "Count", "n": 2, "count_kind": "DistinctWaitpoints",
                   "waitpoints": ["a", "b"]}},
    {"Composite": {"kind": "Count", "n": 1, "count_kind": "DistinctWaitpoints",
                   "waitpoints": ["a", "b", "c"], "matcher": {"ByName": "go"}}},
    {"Composite": {"kind": "Count", "n": 2, "count_kind": "DistinctSignals",
                   "waitpoints": ["a"]}},
    {"Composite": {"kind": "Count", "n": 2, "count_kind": "DistinctSources",
                   "waitpoints": ["a", "b"]}},
    {"Composite": {"kind": "AllOf", "members": [
        {"Composite": {"kind": "Count", "n": 2, "count_kind": "DistinctSignals",
                       "waitpoints": ["a", "b"], "matcher": {"ByName": "go"}}},
        {"Single": {"waitpoint_key": "c"}},
        {"Composite": {"kind": "AllOf", "members": [{"Single": {"waitpoint_key": "a"}}]}}]}},
    "OperatorOnly",
    "TimeoutOnly",
]
NAMES = ("go", "stop", "x/y")
SOURCES = (("user", "u1"), ("user", "u2"), ("bot", "b:1"))
PAYLOADS: list[bytes | None] = [None, b"", bytes(range(256)), b"\x00\xff\r\n{}\"", "é".encode()]
BEHAVIORS = sp.TIMEOUT_BEHAVIORS
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _id(*parts: int) -> str:
    return str(uuid.UUID(int=(parts[0] << 64) | (parts[1] << 32) | parts[2]))


# -- plans -------------------------------------------------------------------------------------

def plan_for(seed: int) -> dict[str, Any]:
    """What one example does: its executions, a flow or not, and its steps (drawn up front,
    so both stores get the same ones whatever they answer)."""
    rng = random.Random(seed)
    flow = rng.random() < 0.35
    flow_id = _id(0xF, seed, 0)
    partition = flow_partition(flow_id, PartitionConfig().flow) if flow else PARTITION
    eids = [f"{{fp:{partition}}}:{_id(0xE, seed, i)}" for i in range(EXECUTIONS)]
    policies = [rng.choice(sorted(POLICIES)) for _ in eids]
    steps: list[tuple[Any, ...]] = []
    serial = 0

    def fresh() -> str:
        nonlocal serial
        serial += 1
        return _id(0xA, seed, serial)

    def x() -> int:  # most steps work on the first execution
        return 0 if rng.random() < 0.6 else rng.randrange(EXECUTIONS)

    def signal(i: int, pick: int | None = None) -> tuple[Any, ...]:
        return ("signal", i, rng.randrange(1_000) if pick is None else pick, rng.choice(
            ["good"] * 14 + ["other", "altered", "missing", "unknown", "shape", "unknown_wp"]),
            rng.choice(NAMES), rng.choice(SOURCES), rng.choice([None, None, "d1", "d2"]),
            rng.choice([1_000, 86_400_000]), rng.randrange(len(PAYLOADS)),
            rng.choice([0, 0, 300]), rng.choice([10_000] * 8 + [3, 0]),
            rng.choice([None] * 8 + ["lane", "other"]), fresh() if rng.random() < 0.95 else None)

    for _ in range(rng.randint(3, 14)):
        kind = rng.choices(
            ["claim", "waitpoint", "suspend", "signal", "resume", "expire", "expire_pending",
             "advance", "cancel", "complete", "fail", "lease_expiry", "revoke", "wait_children",
             "link", "group", "purge", "replay", "reads", "prebuffered", "children"],
            [12, 8, 12, 8, 2, 2, 1, 5, 1, 2, 1, 1, 1, 2, 3 if flow else 0, 1 if flow else 0,
             1, 1, 2, 3, 2 if flow else 0])[0]
        i = x()
        if kind == "prebuffered":  # signals wait on pending waitpoints, then the suspend
            steps.append(("claim", 30_000))
            for key in rng.sample(["a", "b"], rng.choice([1, 2])):
                steps.append(("waitpoint", i, key, fresh(), rng.choice([None, 5_000]), KID))
                for _ in range(rng.choice([1, 1, 2])):
                    steps.append(signal(i, -1)[:3] + ("good",) + signal(i, -1)[4:])
            kind = "suspend"
        elif kind == "children":  # a running member gains a dependency and waits for it
            steps += [("claim", 30_000), ("link", 1, 0, fresh()), ("wait_children", 0)]
            continue
        if kind == "claim":
            steps.append((kind, rng.choice([1_000, 30_000, 30_000])))
        elif kind == "waitpoint":  # then signals it buffers, often
            if rng.random() < 0.4:
                steps.append(("claim", 30_000))
            steps.append((kind, i, rng.choice(KEYS), fresh(), rng.choice([None, 500, 5_000]),
                          rng.choice([KID] * 14 + ["k0"])))
            for _ in range(rng.choice([0, 1, 1, 2])):
                steps.append(signal(i, -1))
        elif kind == "suspend":  # then signals to its waitpoints, often
            if rng.random() < 0.5:
                steps.append(("claim", 30_000))
            raw = rng.choice(CONDITIONS)
            tree = cond.parse_condition(raw)
            named = cond.referenced_keys(tree)
            given = named[:]
            rng.shuffle(given)
            binding = given if named else [f"wpk:{fresh()}"]
            timeout = rng.choice([None, None, 300, 300, 5_000])
            if cond.is_timeout_only(tree) and timeout is None:
                timeout = 1_000
            steps.append((kind, i, tree, tuple(binding), fresh(),
                          tuple((k, fresh()) for k in binding), rng.choice([KID] * 14 + ["k0"]),
                          rng.choice(list(sp.REASONS)), timeout, rng.choice(BEHAVIORS),
                          rng.choice([None, None, "once"])))
            for _ in range(rng.choice([0, 1, 2, 3, 4])):
                steps.append(signal(i))
            if timeout is not None and rng.random() < 0.4:  # the suspension times out
                steps += [("advance", timeout + 1), ("expire", i)]
        elif kind == "signal":
            steps.append(signal(i))
        elif kind == "resume":
            steps.append((kind, i, rng.choice([0, 200]), rng.choice(["operator", "signal"])))
        elif kind == "advance":
            steps.append((kind, rng.choice([1, 301, 600, 1_001, 6_000, 40_000, 90_000_000])))
        elif kind in ("link", "group"):
            steps.append((kind, i, rng.randrange(EXECUTIONS), fresh()))
        elif kind in ("expire_pending", "lease_expiry"):
            steps.append((kind,))
        else:
            steps.append((kind, i))
    return {"seed": seed, "flow": flow, "flow_id": flow_id, "eids": eids,
            "policies": policies, "steps": steps, "lane": f"lane-{seed}"}


# -- one store -----------------------------------------------------------------------------------

class Normaliser:
    """Ids a store drew, in the order they first appear (the test's own ids are kept)."""

    def __init__(self, kept: set[str]) -> None:
        self.kept = kept
        self.seen: dict[str, str] = {}

    def __call__(self, value: Any) -> Any:
        kind = type(value)
        if kind is str:
            return UUID.sub(self._id, value) if len(value) >= 36 else value
        if kind is dict:
            return {k: self(v) for k, v in value.items()}
        if kind is list or kind is tuple:
            return [self(v) for v in value]
        return value

    def _id(self, match: re.Match[str]) -> str:
        text = match.group(0)
        if text in self.kept:
            return text
        return self.seen.setdefault(text, f"drawn-{len(self.seen)}")


class Side:
    def __init__(self, ff: Harness) -> None:
        self.ff = ff
        self.backend = ff.backend
        self.fences: dict[str, Fence] = {}
        self.norm = Normaliser(set())

    # -- what a store holds, read past the protocol (test only) -----------------------------
    async def rows(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        def op() -> Any:
            from appliance.backend.sql.statements import all_
            return (yield all_(sql, *params))

        return [dict(r) for r in await self.backend.read(op)]

    async def waitpoints(self, eid: str) -> list[sp.Waitpoint]:
        if self.backend.name == "valkey":
            conn = self.backend.conn
            ids = sorted(w.decode() for w in await conn.command("SMEMBERS",
                                                                vkeys.record(eid) + ":wps"))
            p = int(eid[4:eid.index("}")])
            found = [codec.waitpoint_from(await conn.call(conn.client.hgetall,
                                                          vkeys.waitpoint(p, wid)))
                     for wid in ids]
            return [w for w in found if w is not None]
        return [sp.Waitpoint(**{c: r[c] for c in sp.WAITPOINT_COLUMNS}) for r in await self.rows(
            "SELECT * FROM ff_waitpoint WHERE execution_id = ? ORDER BY waitpoint_id", eid)]

    async def signals(self, eid: str) -> list[sp.Signal]:
        if self.backend.name == "valkey":
            conn = self.backend.conn
            ids = [s.decode() for s in await conn.command("ZRANGE", vkeys.record(eid) + ":sigs",
                                                          0, -1)]
            return [codec.signal_from(await conn.call(conn.client.hgetall,
                                                      f"{vkeys.record(eid)}:sig:{sid}"))
                    for sid in ids]
        out = []
        for r in await self.rows("SELECT * FROM ff_signal WHERE execution_id = ? ORDER BY seq",
                                 eid):
            values = {c: r[c] for c in sp.SIGNAL_COLUMNS}
            if values["payload"] is not None:
                values["payload"] = bytes(values["payload"])
            out.append(sp.Signal(**values))
        return out

    async def attempts(self, eid: str) -> list[dict[str, Any]]:
        if self.backend.name == "valkey":
            raw = await self.backend.conn.call(self.backend.conn.client.hgetall,
                                               vkeys.record(eid) + ":att")
            found = [json.loads(v) for v in raw.values()]
        else:
            found = await self.rows("SELECT * FROM ff_attempt WHERE execution_id = ?", eid)
        return sorted(({k: v for k, v in a.items() if v is not None} for a in found),
                      key=lambda a: a["attempt_index"])

    async def record(self, eid: str) -> dict[str, Any] | None:
        ex = await self.backend.get_execution(eid)
        if ex is None:
            return None
        row = ex.to_row()
        row["suspension"] = json.loads(row["suspension"]) if row["suspension"] else None
        return row

    async def state(self, eid: str) -> dict[str, Any]:
        return {"record": await self.record(eid), "attempts": await self.attempts(eid),
                "waitpoints": [w.to_row() for w in await self.waitpoints(eid)],
                "signals": [s.to_row() for s in await self.signals(eid)]}

    async def valkey_indexes_hold(self, eid: str) -> None:
        """The open set and the pending-expiry index say what the waitpoints say."""
        if self.backend.name != "valkey":
            return
        conn = self.backend.conn
        wps = await self.waitpoints(eid)
        open_ids = {w.decode() for w in await conn.command("SMEMBERS",
                                                           vkeys.record(eid) + ":wpopen")}
        assert open_ids == {w.waitpoint_id for w in wps if w.state != "closed"}, eid
        p = int(eid[4:eid.index("}")])
        indexed = {m.decode(): int(s) for m, s in await conn.call(
            conn.client.zrange, vkeys.partition(p, "wp_pending"), 0, -1, withscores=True)}
        mine = {w.waitpoint_id for w in wps}
        assert {k: v for k, v in indexed.items() if k in mine} == {
            w.waitpoint_id: w.expires_at for w in wps
            if w.state == "pending" and w.expires_at is not None}, eid


def _error(exc: FlowFabricError) -> tuple[str, str, str]:
    return ("error", exc.kind, str(exc))


async def _applied(side: Side, op: Any, eid: str, args: Any) -> Any:
    [applied] = await side.backend.apply([Mutation(op, eid, args)])
    return ("applied", applied.outcome.wire() if applied.outcome else None,
            _error(applied.error) if applied.error else None, sorted(applied.woken))


async def step_on(side: Side, plan: dict[str, Any], step: tuple[Any, ...],
                  issued: dict[str, list[tuple[str, str]]]) -> Any:
    """One step on one store: what it answered (errors included)."""
    try:
        return await _step(side, plan, step, issued)
    except FlowFabricError as exc:
        return _error(exc)


async def _step(side: Side, plan: dict[str, Any], step: tuple[Any, ...],
                issued: dict[str, list[tuple[str, str]]]) -> Any:
    b, ff, kind = side.backend, side.ff, step[0]
    eids, lane = plan["eids"], plan["lane"]
    eid = eids[step[1]] if len(step) > 1 and kind not in ("claim", "advance") else ""
    fence = side.fences.get(eid, Fence("none", 0, "none"))
    if kind == "claim":
        got = await b.claim(ClaimArgs(lane, "w", "w-1", (), step[1], 1))
        out = []
        for task, payload in got.tasks:
            side.fences[task["execution_id"]] = Fence(task["lease_id"], task["lease_epoch"],
                                                      task["attempt_id"])
            shown = {k: v for k, v in task.items() if k != "handle"}
            if task["attempt_type"] == "resumed":
                shown["signals"] = [s.to_row() for s in
                                    await b.resume_signals(task["execution_id"])]
            out.append((shown, payload))
        return ("claimed", out, sorted(got.woken))
    if kind == "waitpoint":
        _, _, key, wid, expires_in, kid = step
        now = ff.clock.now_ms()
        wp = await b.create_waitpoint(eid, sp.WaitpointArgs(
            fence, wid, key, tokens.mint(KID, SECRET, eid, wid, key), kid,
            None if expires_in is None else now + expires_in))
        issued[eid].append((wid, key))
        return ("waitpoint", wp.to_row())
    if kind == "suspend":
        (_, _, tree, binding, sid, fresh_ids, kid, reason, timeout, behavior, idem) = step
        fresh = tuple((k, wid, tokens.mint(KID, SECRET, eid, wid, k)) for k, wid in fresh_ids)
        result = await b.suspend(eid, sp.SuspendArgs(
            fence, sid, tree, binding, fresh, kid, reason, "worker",
            None if timeout is None else ff.clock.now_ms() + timeout, behavior, idem))
        for w in result.waitpoints:
            if (w["waitpoint_id"], w["waitpoint_key"]) not in issued[eid]:
                issued[eid].append((w["waitpoint_id"], w["waitpoint_key"]))
        return ("suspend", result.wire(), result.signal_ids,
                [s.to_row() for s in result.signals])
    if kind == "signal":
        (_, _, pick, how, name, (stype, sident), idem, ttl, payload, delay, limit, on_lane,
         signal_id) = step
        # A waitpoint of this execution, else any of the plan's (signalled on its own
        # execution), else an unknown one.
        mine = issued[eid] or [(w, k) for e in eids for w, k in issued[e]]
        if not mine or how == "unknown_wp":
            wid, key = _id(0xB, plan["seed"], pick % 1_000), "a"
        else:
            wid, key = mine[pick % len(mine)]
            eid = next(e for e in eids if (wid, key) in issued[e])
        token = tokens.mint(KID, SECRET, eid, wid, key)
        if how == "other":
            others = [w for e in eids for w in issued[e] if w[0] != wid]
            token = tokens.mint(KID, SECRET, eid, others[0][0], others[0][1]) if others else ""
        elif how == "altered":
            token = token[:-1] + ("0" if token[-1] != "0" else "1")
        elif how == "missing":
            token = ""
        elif how == "unknown":
            token = "k9:" + "0" * 64
        elif how == "shape":
            token = "k1:" + token[3:].upper()
        answer, woken = await b.deliver_signal(eid, sp.SignalArgs(
            wid, signal_id or _id(0xA, plan["seed"], 1), name, "category", stype, sident,
            "execution", token, "corr" if pick % 3 else None, idem, ttl, None,
            PAYLOADS[payload], "bin" if PAYLOADS[payload] is not None else None, delay, limit,
            {"lane": lane, "other": "other"}.get(on_lane or "")))
        return ("signal", answer.wire(), sorted(woken))
    if kind == "resume":
        return await _applied(side, sp.resume, eid, sp.ResumeArgs(step[3], step[2]))
    if kind == "expire":
        due = await b.due(BY_NAME["suspension_timeout"], ff.clock.now_ms(), 10_000)
        return (sorted(e for e in due if e in eids),
                await _applied(side, sp.expire_suspension, eid, rules.NoArgs()))
    if kind == "expire_pending":
        return ("expired", await b.expire_pending_waitpoints(ff.clock.now_ms(), 10_000))
    if kind == "advance":
        ff.clock.advance(step[1])
        return ("advanced",)
    if kind == "cancel":
        return await _applied(side, rules.cancel, eid, rules.CancelArgs("stop"))
    if kind == "complete":
        return await _applied(side, rules.complete, eid, rules.CompleteArgs(fence, b"done"))
    if kind == "fail":
        return await _applied(side, rules.fail, eid, rules.FailArgs(fence, "boom", "transient"))
    if kind == "lease_expiry":
        return [await _applied(side, rules.mark_lease_expired, e, rules.NoArgs()) for e in eids]
    if kind == "revoke":
        return await _applied(side, rules.revoke_lease, eid, rules.RevokeLeaseArgs())
    if kind == "replay":
        return await _applied(side, rules.replay, eid, rules.ReplayArgs())
    if kind == "purge":
        return await _applied(side, rules.purge, eid, rules.NoArgs())
    if kind == "wait_children":
        return ("children", (await b.wait_children(eid, fence)).wire())
    if kind == "reads":
        listed = await b.list_waitpoints(eid)
        return ("reads", None if listed is None else [w.to_row() for w in listed[1]],
                [s.to_row() for s in await b.resume_signals(eid)],
                [None if (w := await b.get_waitpoint(eid, wid)) is None else w.to_row()
                 for wid, _ in issued[eid]])
    if kind == "link":
        _, i, j, edge_id = step
        if i == j:
            return ("link", "self")
        flow = await ff.call("GET", f"/v1/flows/{plan['flow_id']}")
        revision = flow.body["graph_revision"] if flow.status == 200 else 0
        body = {"flow_id": plan["flow_id"], "edge_id": edge_id, "upstream_execution_id": eids[i],
                "downstream_execution_id": eids[j], "expected_graph_revision": revision}
        staged = await ff.call("POST", f"/v1/flows/{plan['flow_id']}/edges", body)
        body.pop("expected_graph_revision")
        applied = await ff.call("POST", f"/v1/flows/{plan['flow_id']}/edges/apply", body)
        return ("link", staged.status, staged.body, applied.status, applied.body)
    if kind == "group":
        reply = await ff.call("POST", f"/v1/flows/{plan['flow_id']}/edge-groups", {
            "flow_id": plan["flow_id"], "downstream_execution_id": eids[step[2]],
            "policy": "all_of"})
        return ("group", reply.status, reply.body)
    raise AssertionError(f"unknown step {step}")


async def begin(side: Side, plan: dict[str, Any]) -> Any:
    """The plan's executions: created alone, or as the nodes of a flow."""
    side.fences.clear()
    side.norm = Normaliser({*(eid.partition("}:")[2] for eid in plan["eids"]), plan["flow_id"]})
    side.ff.clock.advance(10_000_000)
    policies = [POLICIES[p] for p in plan["policies"]]
    if plan["flow"]:
        reply = await side.ff.call("POST", "/v1/flows", {
            "flow_id": plan["flow_id"],
            "nodes": [{"key": f"n{i}", "execution_id": eid, "lane_id": plan["lane"],
                       **({"policy": p} if p else {})}
                      for i, (eid, p) in enumerate(zip(plan["eids"], policies, strict=True))]})
        return (reply.status, reply.body)
    made = await side.backend.create([
        CreateArgs(eid, PARTITION, "ns", plan["lane"], "kind", b"input", None, 0, "me",
                   parse_policy(p or {})) for eid, p in zip(plan["eids"], policies, strict=True)])
    return [(a.outcome.wire() if a.outcome else None, a.error) for a in made]


async def compare(sides: list[Side], plan: dict[str, Any]) -> None:
    issued: list[dict[str, list[tuple[str, str]]]] = [
        {eid: [] for eid in plan["eids"]} for _ in sides]
    first = [s.norm(await begin(s, plan)) for s in sides]
    assert first[0] == first[1], (plan["seed"], first)
    for n, step in enumerate(plan["steps"]):
        seen = []
        for side, mine in zip(sides, issued, strict=True):
            answer = await step_on(side, plan, step, mine)
            records = [await side.record(eid) for eid in plan["eids"]]
            seen.append(side.norm((answer, records)))
        assert seen[0] == seen[1], _explain(plan, n, seen)
    ends = []
    for side in sides:
        ends.append(side.norm([await side.state(eid) for eid in plan["eids"]]))
        for eid in plan["eids"]:
            await side.valkey_indexes_hold(eid)
    assert ends[0] == ends[1], _explain(plan, len(plan["steps"]), ends)


def _explain(plan: dict[str, Any], n: int, seen: list[Any]) -> str:
    steps = "\n".join(f"  {i}: {s}" for i, s in enumerate(plan["steps"][:n + 1]))
    return (f"seed {plan['seed']} differs at step {n}:\n{steps}\nsql:    {seen[0]}\n"
            f"valkey: {seen[1]}")


async def run_plans(url: str, seeds: range) -> None:
    async with open_harness("memory") as sql, \
            open_harness("valkey", {"FF_VALKEY_URL": url}) as lua:
        sides = [Side(sql), Side(lua)]
        for side in sides:  # the same signing key on both stores
            _, held = await side.backend.seed_waitpoint_keys(KID, SECRET)
            assert held.secrets == {KID: SECRET}
        for seed in seeds:
            await compare(sides, plan_for(seed))


def test_sql_suspension_and_the_lua_library_agree(valkey_server):
    redis_cli(valkey_server.port, "FLUSHALL")
    trio.run(run_plans, valkey_server.url, range(FIRST_SEED, FIRST_SEED + EXAMPLES))
