"""Policies stored by an older version (non-finite or out-of-range numbers, unreadable
JSON) are read leniently by the Lua library, exactly as core.policy.load_policy reads
them for the SQL stores: nothing stored can make an operation fail or strand work."""

from __future__ import annotations

import json

import pytest
from backend_setups.valkey import redis_cli

from appliance.core.limits import DURATION_MAX_MS
from appliance.core.policy import load_policy
from appliance.testing import open_harness

BROKEN = {
    "nan-multiplier": '{"retry_policy":{"max_retries":3,"backoff":{"type":"exponential",'
                      '"initial_delay_ms":100,"max_delay_ms":1000,"multiplier":NaN}},'
                      '"timeout_policy":{"attempt_timeout_ms":1000}}',
    "infinite-everything": '{"retry_policy":{"max_retries":Infinity,"backoff":{"type":'
                           '"exponential","initial_delay_ms":1e400,"max_delay_ms":1e400,'
                           '"multiplier":1e300}},"timeout_policy":{"attempt_timeout_ms":1000}}',
    "unreadable": "{{{ not json",
}


def expected_delay(stored: str, retry: int = 0) -> int | None:
    policy = load_policy(stored)
    return None if policy.retry is None else policy.retry.backoff.delay_for(retry)


@pytest.mark.parametrize("name", sorted(BROKEN))
async def test_a_broken_stored_policy_reads_like_python_reads_it(valkey_server,
                                                                 valkey_backend_options, name):
    stored = BROKEN[name]
    async with open_harness("valkey", valkey_backend_options) as ff:
        eid = await ff.create(policy={"timeout_policy": {"attempt_timeout_ms": 1000}})
        redis_cli(valkey_server.port, "HSET", f"ff:x:{eid}", "policy", stored)
        task = await ff.claim()
        assert json.dumps(task["policy"], allow_nan=False)  # strict JSON to the worker
        reply = await ff.worker_op("fail", task, failure_reason="boom")
        assert reply.status == 200, reply
        delay = expected_delay(stored)
        if delay is None:
            assert "TerminalFailed" in reply.body
        else:
            scheduled = reply.body["RetryScheduled"]
            assert scheduled["delay_until"] - ff.clock.now_ms() == delay
            assert 0 <= delay <= DURATION_MAX_MS


async def test_an_attempt_timeout_with_a_broken_policy_still_moves_the_execution(
        valkey_server, valkey_backend_options):
    """The defect: the scanner hit an overflow, skipped the execution and left it active
    with a long-expired lease."""
    async with open_harness("valkey", valkey_backend_options) as ff:
        eid = await ff.create(policy={"timeout_policy": {"attempt_timeout_ms": 1000}})
        await ff.claim()
        redis_cli(valkey_server.port, "HSET", f"ff:x:{eid}", "policy",
                  BROKEN["infinite-everything"])
        ff.clock.advance(60_000)
        await ff.tick("attempt_timeout")
        await ff.tick("lease_expiry")
        info = await ff.info(eid)
        assert info["public_state"] in ("delayed", "waiting", "expired"), info
