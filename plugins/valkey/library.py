"""Boot checks and the function library: server version gate, partition counts, load/reload."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flowfabric_lua import library_files
from redis import exceptions as rx

from appliance.core.errors import StartupError
from appliance.core.partitions import PartitionConfig

from . import generated, keys

if TYPE_CHECKING:
    from .connection import Connection

#: The library's version (``LIBRARY_VERSION`` in lua/00_library.lua); ``ff_version``
#: answers it with a digest of the source, so any change to the Lua is loaded.
LIBRARY_VERSION = "1"
DIGEST_PLACEHOLDER = "@SOURCE_DIGEST@"
MINIMUM = {"Redis": (7, 0), "Valkey": (7, 2)}
NEEDS = "FlowFabric needs Redis 7.0 or newer, or Valkey 7.2 or newer (it uses Functions)"


def server_identity(info: Mapping[str, Any]) -> tuple[str, str]:
    """("Valkey" | "Redis", version text) from an ``INFO server`` answer."""
    if "valkey_version" in info:
        return "Valkey", str(info["valkey_version"])
    name = "Valkey" if str(info.get("server_name", "")).lower() == "valkey" else "Redis"
    return name, str(info.get("redis_version", "0"))


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3]) or (0,)


def check_server_versions(infos: Mapping[str, Mapping[str, Any]]) -> None:
    """Refuse a node older than Redis 7.0 / Valkey 7.2, naming it and both minimums."""
    for node, info in infos.items():
        name, version = server_identity(info)
        if _version_tuple(version) < MINIMUM[name]:
            raise StartupError(f"{node} runs {name} {version}; {NEEDS}. Upgrade the server or "
                               f"point FF_VALKEY_URL elsewhere")


async def check_partitions(conn: Connection, wanted: PartitionConfig) -> None:
    """Record the partition counts on first boot; refuse other counts later."""
    counts = wanted.as_dict()

    def record(pipe: Any) -> None:
        for name, value in counts.items():
            pipe.hsetnx(keys.CONFIG, name, value)
        pipe.hgetall(keys.CONFIG)

    stored_raw = (await conn.pipeline(record))[-1]
    stored = {k.decode(): int(v) for k, v in stored_raw.items()}
    diffs = ", ".join(f"{name}: stored={stored.get(name)}, config={value}"
                      for name, value in counts.items() if stored.get(name) != value)
    if diffs:
        raise StartupError(
            f"partition_mismatch: {diffs}. Partition counts are fixed when the store is first "
            f"used; set FF_FLOW_PARTITIONS/FF_BUDGET_PARTITIONS/FF_QUOTA_PARTITIONS to the stored "
            f"values or use a new store")


def versioned_source() -> tuple[str, str]:
    """The library to load and the version its ``ff_version`` will answer."""
    source = generated.assemble(library_files())
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    return source.replace(DIGEST_PLACEHOLDER, digest), f"{LIBRARY_VERSION}.{digest}"


async def loaded_versions(conn: Connection) -> list[str | None]:
    """``ff_version`` on every primary (None where the library is missing)."""
    found: list[str | None] = []
    for node in conn.primaries():
        try:
            raw = await conn.on_node(node, "FCALL", "ff_version", 0)
        except rx.ResponseError:
            found.append(None)
            continue
        found.append(raw.decode() if isinstance(raw, bytes) else str(raw))
    return found


async def load(conn: Connection) -> None:
    """``FUNCTION LOAD REPLACE`` on every primary."""
    source, _ = versioned_source()
    for node in conn.primaries():
        await conn.on_node(node, "FUNCTION", "LOAD", "REPLACE", source)


async def ensure(conn: Connection) -> None:
    """Load the library where it is missing or another version."""
    _, wanted = versioned_source()
    if all(v == wanted for v in await loaded_versions(conn)):
        return
    try:
        await load(conn)
    except rx.ResponseError as exc:
        raise StartupError(f"could not load the flowfabric function library into "
                           f"{conn.settings.describe()}: {exc}") from exc
    found = await loaded_versions(conn)
    if any(v != wanted for v in found):
        raise StartupError(f"the flowfabric function library reports versions {found} after "
                           f"loading version {wanted}; is another FlowFabric version loading "
                           f"its own library into the same store?")


async def operations(conn: Connection) -> frozenset[str]:
    """The operations the loaded library registered a function for."""
    raw = await conn.command("FCALL_RO", "ff_operations", 0)
    return frozenset(name.decode() if isinstance(name, bytes) else str(name)
                     for name in raw or ())
