"""Partition math: CRC16/XMODEM over ids, modulo the deployment's partition counts."""

from __future__ import annotations

import uuid
from dataclasses import dataclass


def _table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_CRC_TABLE = _table()


def crc16(data: bytes) -> int:
    """CRC-16/XMODEM, the Valkey Cluster slot hash (``b"123456789"`` → 0x31C3)."""
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[((crc >> 8) ^ b) & 0xFF]
    return crc


def solo_partition(lane_id: str, num_flow_partitions: int) -> int:
    return crc16(lane_id.encode("utf-8")) % num_flow_partitions


def flow_partition(flow_id: str, num_flow_partitions: int) -> int:
    """Over the UUID's 16 raw bytes, so flows and their members co-locate."""
    return crc16(uuid.UUID(flow_id).bytes) % num_flow_partitions


@dataclass(frozen=True, slots=True)
class PartitionConfig:
    """Fixed at deployment time; the store refuses a boot with other counts."""

    flow: int = 256
    budget: int = 32
    quota: int = 32

    def as_dict(self) -> dict[str, int]:
        return {"num_flow_partitions": self.flow, "num_budget_partitions": self.budget,
                "num_quota_partitions": self.quota}
