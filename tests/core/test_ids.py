"""Execution ids, partition hashing, lane and worker-name validation."""

import uuid

import pytest

from appliance.core.errors import InvalidInput
from appliance.core.ids import (
    ExecutionId,
    mint_for_flow,
    mint_solo,
    parse_execution_id,
    validate_lane,
    validate_worker_name,
)
from appliance.core.partitions import crc16, flow_partition, solo_partition

UUID = "550e8400-e29b-41d4-a716-446655440000"


def test_parse_reads_partition_and_round_trips():
    eid = parse_execution_id(f"{{fp:42}}:{UUID}")
    assert eid == ExecutionId(42, UUID)
    assert str(eid) == f"{{fp:42}}:{UUID}"


@pytest.mark.parametrize("text, hint", [
    (UUID, "{fp:"),
    (f"{{fp:xx}}:{UUID}", "0..65535"),
    (f"{{fp:65536}}:{UUID}", "0..65535"),
    (f"{{fp:-1}}:{UUID}", "0..65535"),
    ("{fp:0}:not-a-uuid", "UUID"),
    (f"{{fp:0}}{UUID}", "}:"),
])
def test_malformed_ids_are_rejected_with_a_useful_message(text, hint):
    with pytest.raises(InvalidInput) as err:
        parse_execution_id(text)
    assert err.value.kind == "invalid_input"
    assert hint in err.value.message
    assert "execution_id" in err.value.message


def test_non_string_id_is_rejected():
    with pytest.raises(InvalidInput, match="expected a string"):
        parse_execution_id(42)


def test_parse_names_the_field_it_was_given():
    with pytest.raises(InvalidInput, match="cursor"):
        parse_execution_id("nope", "cursor")


def test_uppercase_uuid_is_normalised_to_lowercase():
    eid = parse_execution_id(f"{{fp:7}}:{UUID.upper()}")
    assert str(eid) == f"{{fp:7}}:{UUID}"


def test_partition_zero_is_kept_whatever_the_uuid_hashes_to():
    for _ in range(20):
        u = str(uuid.uuid4())
        assert parse_execution_id(f"{{fp:0}}:{u}").partition == 0


def test_max_partition_index_is_accepted():
    assert parse_execution_id(f"{{fp:65535}}:{UUID}").partition == 65535


def test_crc16_check_value():
    assert crc16(b"123456789") == 0x31C3


@pytest.mark.parametrize("lane, partition", [("default", 86), ("workers-a", 193)])
def test_solo_partition_of_known_lanes(lane, partition):
    assert solo_partition(lane, 256) == partition
    assert parse_execution_id(mint_solo(lane, 256)).partition == partition


def test_mint_solo_keeps_a_lane_on_one_partition_with_fresh_uuids():
    a, b = parse_execution_id(mint_solo("workers-a", 256)), parse_execution_id(
        mint_solo("workers-a", 256))
    assert a.partition == b.partition
    assert a.uuid != b.uuid


def test_hundred_lanes_spread_over_more_than_fifty_partitions():
    partitions = {solo_partition(f"lane-{i}", 256) for i in range(100)}
    assert len(partitions) > 50


def test_mint_for_flow_co_locates_with_the_flow():
    flow = str(uuid.uuid4())
    expected = crc16(uuid.UUID(flow).bytes) % 256
    assert flow_partition(flow, 256) == expected
    assert parse_execution_id(mint_for_flow(flow, 256)).partition == expected


def test_partition_count_bounds_minted_partition():
    assert all(parse_execution_id(mint_solo(f"l{i}", 4)).partition < 4 for i in range(30))


def test_lane_of_64_bytes_is_accepted():
    assert validate_lane("a" * 64) == "a" * 64


def test_lane_with_a_space_is_accepted():
    assert validate_lane("my lane") == "my lane"


@pytest.mark.parametrize("lane, hint", [
    ("", "must not be empty"),
    ("a" * 65, "exceeds 64 bytes (got 65)"),
    ("bad\nlane", "index 3"),
    ("lane\0x", "index 4"),
    ("\tlane", "index 0"),
    ("la\x7fne", "index 2"),
    ("lané", "non-ASCII"),
    (None, "must be a string"),
])
def test_invalid_lanes_are_rejected(lane, hint):
    with pytest.raises(InvalidInput) as err:
        validate_lane(lane)
    assert hint in err.value.message
    assert err.value.message.startswith("lane_id")


@pytest.mark.parametrize("name", ["w1", "worker-gpu-pool-1", "x" * 256, "wörker"])
def test_valid_worker_names(name):
    assert validate_worker_name(name, "worker_id") == name


@pytest.mark.parametrize("name, hint", [
    ("", "must not be empty"),
    ("x" * 257, "exceeds 256 bytes"),
    ("w 1", "whitespace"),
    ("w\t1", "whitespace"),
    ("w\x001", "control"),
    ("w\x7f", "control"),
    (7, "must be a string"),
])
def test_invalid_worker_names_are_rejected(name, hint):
    with pytest.raises(InvalidInput) as err:
        validate_worker_name(name, "worker_instance_id")
    assert hint in err.value.message
    assert err.value.message.startswith("worker_instance_id")
