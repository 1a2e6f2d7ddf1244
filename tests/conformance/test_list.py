"""Listing a partition's executions: ascending ids, exclusive cursor, capped limit."""

import uuid

import pytest

from appliance.testing import eid_path

PARTITION = 7


async def create_many(ff, count: int, partition: int = PARTITION) -> list[str]:
    ids = [f"{{fp:{partition}}}:{uuid.uuid4()}" for _ in range(count)]
    for eid in ids:
        await ff.create(execution_id=eid)
    return sorted(ids)


async def page(ff, **query):
    reply = await ff.call("GET", "/v1/executions", query={"partition": PARTITION, **query})
    assert reply.status == 200, reply
    return reply.body["executions"], reply.body["next_cursor"]


async def test_pages_walk_ids_in_ascending_order(ff):
    ids = await create_many(ff, 15)
    first, cursor = await page(ff, limit=5)
    assert (first, cursor) == (ids[0:5], ids[4])
    second, cursor = await page(ff, limit=5, cursor=cursor)
    assert (second, cursor) == (ids[5:10], ids[9])
    third, cursor = await page(ff, limit=5, cursor=cursor)
    assert (third, cursor) == (ids[10:15], None)


async def test_cursor_at_the_last_id_gives_an_empty_page(ff):
    ids = await create_many(ff, 3)
    assert await page(ff, cursor=ids[-1]) == ([], None)


async def test_cursor_is_exclusive(ff):
    ids = await create_many(ff, 3)
    assert await page(ff, cursor=ids[0]) == (ids[1:], None)


async def test_empty_cursor_means_from_the_start(ff):
    ids = await create_many(ff, 2)
    assert await page(ff, cursor="") == (ids, None)


async def test_limit_zero_gives_an_empty_page(ff):
    await create_many(ff, 2)
    assert await page(ff, limit=0) == ([], None)


async def test_limit_above_the_cap_is_clamped_not_refused(ff):
    ids = await create_many(ff, 3)
    assert await page(ff, limit=5000) == (ids, None)


async def test_empty_partition_gives_an_empty_page(ff):
    assert await page(ff) == ([], None)


async def test_other_partitions_are_not_listed(ff):
    mine = await create_many(ff, 2)
    await create_many(ff, 2, partition=PARTITION + 1)
    await ff.create()
    assert await page(ff) == (mine, None)


async def test_listing_includes_terminal_executions(ff):
    ids = await create_many(ff, 2)
    reply = await ff.call("POST", f"/v1/executions/{eid_path(ids[0])}/cancel", {})
    assert reply.status == 200, reply
    assert await page(ff) == (ids, None)


async def test_missing_partition_is_a_400(ff):
    reply = await ff.call("GET", "/v1/executions", query={"limit": 5})
    assert reply.status == 400, reply
    assert "partition" in reply.body["error"]


@pytest.mark.parametrize("query, named", [
    ({"cursor": "not-an-id"}, "cursor"),
    ({"cursor": str(uuid.uuid4())}, "cursor"),
    ({"limit": "five"}, "limit"),
    ({"limit": "-1"}, "limit"),
    ({"partition": "seven"}, "partition"),
    ({"partition": "65536"}, "partition"),
    ({"colour": "blue"}, "colour"),
])
async def test_bad_query_values_are_a_400(ff, query, named):
    reply = await ff.call("GET", "/v1/executions", query={"partition": PARTITION, **query})
    assert reply.status == 400, reply
    assert reply.body["kind"] == "invalid_input"
    assert named in reply.body["error"]
