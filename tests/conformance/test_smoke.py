"""The lifecycle in one breath: create → claim → complete → result."""

from appliance.testing import eid_path


async def test_create_claim_complete_result(ff):
    eid = await ff.create(execution_kind="demo", input_payload=[0, 255, 1])
    task = await ff.claim()
    assert task["execution_id"] == eid
    assert task["input_payload"] == [0, 255, 1]
    assert (task["attempt_index"], task["lease_epoch"], task["attempt_type"]) == (0, 1, "initial")
    done = await ff.worker_op("complete", task, result=[1, 2, 254])
    assert done.status == 200, done
    assert done.body == {"Completed": {"execution_id": eid, "public_state": "completed"}}
    result = await ff.call("GET", f"/v1/executions/{eid_path(eid)}/result")
    assert (result.status, result.body) == (200, bytes([1, 2, 254]))
