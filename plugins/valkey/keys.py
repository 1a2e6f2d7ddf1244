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
