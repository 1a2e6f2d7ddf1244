"""ExecutionPolicy parsing, normalisation, backoff and capability sets."""

import json
import random

import pytest

from appliance.core.errors import InvalidInput
from appliance.core.policy import (
    CAPS_MAX_TOKENS,
    Backoff,
    ExecutionPolicy,
    RetryPolicy,
    load_policy,
    parse_capabilities,
    parse_policy,
)

FULL = {
    "retry_policy": {"max_retries": 2, "backoff": {"type": "fixed", "delay_ms": 5},
                     "retryable_categories": ["b", "a", "a"]},
    "timeout_policy": {"attempt_timeout_ms": 10, "execution_deadline_ms": 20,
                       "max_reclaim_count": 4},
    "max_replay_count": 3,
    "routing_requirements": {"required_capabilities": ["gpu", "cuda", "gpu"]},
    "dedup_window_ms": 5,
    "stream_policy": {"retention_ttl_ms": 9},
    "fallback_policy": {"tiers": [{"provider": "p", "model": "m", "timeout_ms": 100}]},
}


def test_no_policy_means_defaults():
    policy = parse_policy(None)
    assert policy == ExecutionPolicy()
    assert (policy.retry, policy.max_reclaim_count, policy.max_replay_count) == (None, 100, 10)
    assert json.loads(policy.to_json()) == {"v": 1, "max_reclaim_count": 100,
                                            "max_replay_count": 10,
                                            "max_signals_per_execution": 10000}


def test_empty_object_equals_defaults():
    assert parse_policy({}) == ExecutionPolicy()


def test_retry_policy_defaults():
    retry = parse_policy({"retry_policy": {}}).retry
    assert retry == RetryPolicy(max_retries=3, backoff=Backoff(), retryable_categories=())
    assert (retry.backoff.type, retry.backoff.initial_delay_ms, retry.backoff.max_delay_ms,
            retry.backoff.multiplier, retry.backoff.jitter) == ("exponential", 1000, 60000,
                                                                2.0, False)


def test_full_policy_is_normalised():
    policy = parse_policy(FULL)
    assert policy.retry.retryable_categories == ("a", "b")
    assert policy.required_capabilities == ("cuda", "gpu")
    assert policy.max_reclaim_count == 4
    doc = json.loads(policy.to_json())
    assert doc["routing_requirements"] == {"required_capabilities": ["cuda", "gpu"]}
    assert doc["retry_policy"] == {"max_retries": 2, "retryable_categories": ["a", "b"],
                                   "backoff": {"type": "fixed", "delay_ms": 5, "jitter": False}}
    assert doc["timeout_policy"] == {"attempt_timeout_ms": 10, "execution_deadline_ms": 20}
    assert doc["max_reclaim_count"] == 4


@pytest.mark.parametrize("raw", [None, {}, FULL,
                                 {"retry_policy": {"backoff": {"multiplier": 3, "jitter": True}}}])
def test_to_json_round_trips_through_load_policy(raw):
    policy = parse_policy(raw)
    stored = policy.to_json()
    assert load_policy(stored) == policy
    assert load_policy(stored).to_json() == stored


def test_load_policy_of_empty_string_is_defaults():
    assert load_policy("") == ExecutionPolicy()


def test_fixed_backoff_ignores_retry_count():
    backoff = Backoff(type="fixed", delay_ms=250)
    assert [backoff.delay_for(n) for n in range(4)] == [250, 250, 250, 250]


def test_exponential_backoff_doubles_then_caps():
    backoff = Backoff(type="exponential", initial_delay_ms=1000, multiplier=2.0,
                      max_delay_ms=60_000)
    assert [backoff.delay_for(n) for n in range(3)] == [1000, 2000, 4000]
    assert backoff.delay_for(5) == 32_000
    assert backoff.delay_for(6) == 60_000
    assert backoff.delay_for(40) == 60_000


def test_jitter_draws_within_half_to_full_delay():
    rng = random.Random(1234)
    backoff = Backoff(type="exponential", initial_delay_ms=1000, multiplier=2.0,
                      max_delay_ms=60_000, jitter=True)
    draws = [backoff.delay_for(2, rng.random()) for _ in range(200)]
    assert all(2000 <= d <= 4000 for d in draws)
    assert len(set(draws)) > 1
    assert (backoff.delay_for(2, 0.0), backoff.delay_for(2, 0.9999999)) == (2000, 4000)


def test_jitter_is_a_function_of_the_draw():
    backoff = Backoff(type="fixed", delay_ms=1000, jitter=True)
    assert len({backoff.delay_for(0, 0.25) for _ in range(3)}) == 1


@pytest.mark.parametrize("retry_count, category, allowed", [
    (0, None, True), (2, "any", True), (3, None, False), (4, "x", False)])
def test_retry_allows_while_budget_remains(retry_count, category, allowed):
    assert RetryPolicy(max_retries=3).allows(retry_count, category) is allowed


@pytest.mark.parametrize("category, allowed", [
    ("timeout", True), ("network", True), ("bad_input", False), (None, False)])
def test_retry_allows_only_listed_categories(category, allowed):
    policy = RetryPolicy(max_retries=3, retryable_categories=("network", "timeout"))
    assert policy.allows(0, category) is allowed


def test_zero_max_retries_never_retries():
    assert not RetryPolicy(max_retries=0).allows(0, None)


def test_capabilities_are_sorted_and_deduplicated():
    assert parse_capabilities(["gpu", "cuda", "gpu"], "worker") == ("cuda", "gpu")


def test_no_capabilities_is_empty():
    assert parse_capabilities(None, "worker") == ()
    assert parse_capabilities([], "worker") == ()


@pytest.mark.parametrize("raw, case", [
    ("gpu", "required:not_array"),
    (["gpu", 42], "required:non_string_token"),
    (["gpu", ""], "required:empty_token"),
    (["a,b"], "required:comma_in_token"),
    (["has space"], "required:control_or_whitespace"),
    (["new\nline"], "required:control_or_whitespace"),
    (["del\x7f"], "required:control_or_whitespace"),
    ([f"c{i}" for i in range(CAPS_MAX_TOKENS + 1)], "required:too_many_tokens"),
    ([f"{i:04d}" + "x" * 100 for i in range(50)], "required:too_many_bytes"),
])
def test_bad_capabilities_name_the_case(raw, case):
    with pytest.raises(InvalidInput) as err:
        parse_capabilities(raw, "required")
    assert err.value.kind == "invalid_capabilities"
    assert err.value.message.startswith(
        f"policy.routing_requirements.required_capabilities: {case}")


def test_worker_side_is_named_in_capability_errors():
    with pytest.raises(InvalidInput, match="^capabilities: worker:empty_token"):
        parse_capabilities([""], "worker")


def test_capability_limit_counts_distinct_tokens():
    assert len(parse_capabilities(["x"] * (CAPS_MAX_TOKENS + 10), "worker")) == 1


def test_policy_capability_errors_keep_their_kind():
    with pytest.raises(InvalidInput) as err:
        parse_policy({"routing_requirements": {"required_capabilities": ["a,b"]}})
    assert err.value.kind == "invalid_capabilities"


@pytest.mark.parametrize("raw, where", [
    ([], "policy"),
    ("x", "policy"),
    ({"nope": 1}, "'nope'"),
    ({"retry_policy": {"backoff": {"type": "linear"}}}, "backoff.type"),
    ({"retry_policy": {"backoff": {"multiplier": 0.5}}}, "multiplier"),
    ({"retry_policy": {"backoff": {"jitter": "yes"}}}, "jitter"),
    ({"retry_policy": {"backoff": {"type": "fixed", "initial_delay_ms": 5}}}, "initial_delay_ms"),
    ({"retry_policy": {"max_retries": -1}}, "max_retries"),
    ({"retry_policy": {"max_retries": "3"}}, "max_retries"),
    ({"retry_policy": {"retryable_categories": [1]}}, "retryable_categories"),
    ({"retry_policy": {"retryable_categories": "timeout"}}, "retryable_categories"),
    ({"timeout_policy": {"attempt_timeout_ms": 0}}, "attempt_timeout_ms"),
    ({"timeout_policy": {"extra": 1}}, "'extra'"),
    ({"routing_requirements": "gpu"}, "routing_requirements"),
    ({"routing_requirements": {"preferred_locality": "eu"}}, "preferred_locality"),
    ({"suspension_policy": {}}, "suspension_policy"),
    ({"budget_ids": ["b1"]}, "budget_ids"),
    ({"stream_policy": {"durability_mode": "sync"}}, "durability_mode"),
    ({"fallback_policy": {"tiers": "p"}}, "tiers"),
    ({"fallback_policy": {"tiers": [{"provider": "p"}]}}, "tiers[0].model"),
    ({"max_replay_count": 1.5}, "max_replay_count"),
    ({"dedup_window_ms": 0}, "dedup_window_ms"),
])
def test_invalid_policies_are_refused_naming_the_field(raw, where):
    with pytest.raises(InvalidInput) as err:
        parse_policy(raw)
    assert err.value.kind == "invalid_policy_json"
    assert where in err.value.message


# -- stored policies are read leniently ----------------------------------------------

@pytest.mark.parametrize("stored, check", [
    ('{"retry_policy":{"backoff":{"type":"exponential","multiplier":NaN}}}',
     lambda p: p.retry.backoff.multiplier == 2.0),
    ('{"retry_policy":{"backoff":{"type":"exponential","multiplier":1e300,'
     '"initial_delay_ms":1e400,"max_delay_ms":-5}}}',
     lambda p: (p.retry.backoff.multiplier, p.retry.backoff.initial_delay_ms,
                p.retry.backoff.max_delay_ms) == (1000.0, 1000, 0)),
    ('{"timeout_policy":{"attempt_timeout_ms":Infinity},"max_reclaim_count":"x"}',
     lambda p: (p.attempt_timeout_ms, p.max_reclaim_count) == (None, 100)),
    ('{"some_future_field":1,"max_replay_count":99999999999999}',
     lambda p: p.max_replay_count == 2**32 - 1),
    ("{{{ not json", lambda p: p == load_policy("{}")),
    ('{"budget_ids":["b"]}', lambda p: p == load_policy("{}")),
])
def test_a_stored_policy_never_fails_to_load(stored, check):
    policy = load_policy(stored)
    assert check(policy)
    json.loads(policy.to_json())  # and it stores back as strict JSON


def test_backoff_growth_saturates_instead_of_overflowing():
    backoff = parse_policy({"retry_policy": {"backoff": {
        "multiplier": 1000, "initial_delay_ms": 1, "max_delay_ms": 5000}}}).retry.backoff
    assert [backoff.delay_for(n) for n in (0, 1, 2, 10, 10**9)] == [1, 1000, 5000, 5000, 5000]
