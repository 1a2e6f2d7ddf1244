"""Key names; the Lua library builds the same ones (see lua/00_library.lua).

Everything about one execution and every per-partition index carries the hash tag
``{fp:N}``, so one FCALL touches one cluster slot. Deployment-wide keys share ``{cfg}``.
"""

from __future__ import annotations

CONFIG = "ff:{cfg}:config"
USED_PARTITIONS = "ff:{cfg}:partitions_used"
#: The library publishes "<partition>:<lane>" here when it made work claimable.
WORK_CHANNEL = "ff:work"

def record(execution_id: str) -> str:
    """The execution's record; ``execution_id`` (``{fp:N}:<uuid>``) brings the tag."""
    return "ff:x:" + execution_id


def partition(index: int, name: str = "all") -> str:
    return f"ff:p:{{fp:{index}}}:{name}"


def lane_hint(lane: str) -> str:
    """Partitions that have held work of ``lane`` (besides its solo partition)."""
    return "ff:hint:" + lane


def flow(index: int, flow_id: str) -> str:
    """A flow's record; its other keys (lua/00_library.lua) extend this one."""
    return f"ff:f:{{fp:{index}}}:{flow_id}"


def flows(index: int, namespace: str | None = None) -> str:
    """The flows of partition ``index`` (of one namespace), lex-ordered by id."""
    if namespace is None:
        return partition(index, "flows")
    return partition(index, f"flows:{len(namespace.encode())}:{namespace}")


def waitpoint(index: int, waitpoint_id: str) -> str:
    """A waitpoint's record (on its execution's partition); lua/00_library.lua lists the
    keys that extend it."""
    return f"ff:w:{{fp:{index}}}:{waitpoint_id}"


# -- admission (lua/50_admission.lua lists the keys that extend these) ----------------------
#: Worker registry: instance ids (lex order) and when each was last seen plus its TTL.
WORKERS = "ff:{cfg}:workers"
WORKERS_SEEN = "ff:{cfg}:workers_seen"


def worker(instance_id: str) -> str:
    return "ff:{cfg}:worker:" + instance_id


def budget(index: int, budget_id: str) -> str:
    return f"ff:b:{{b:{index}}}:{budget_id}"


def budget_resets(index: int) -> str:
    """Budget id -> next_reset_at, for the reset scanner."""
    return f"ff:bp:{{b:{index}}}:reset"


def quota(index: int, quota_id: str) -> str:
    return f"ff:q:{{q:{index}}}:{quota_id}"


def quotas(index: int) -> str:
    """The quota ids of partition ``index`` (the reconciler's list)."""
    return f"ff:qp:{{q:{index}}}:all"


def lane_classes(index: int, lane: str) -> str:
    """The claim classes with claimable work of ``lane`` on partition ``index``."""
    return partition(index, f"capsets:{len(lane.encode())}:{lane}")


def claim_set(index: int, lane: str, cls: bytes) -> bytes:
    """The claimable executions of ``lane`` in claim class ``cls`` on partition ``index``."""
    return partition(index, f"claim:{len(lane.encode())}:{lane}:").encode() + cls
