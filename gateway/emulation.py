"""Emulated clouds on one machine: network distance, accelerator speed and faults.

`EmulatedPool` wraps a real pool. It adds the cloud's round trip (half before the
call, half after), holds each call until a virtual accelerator capped at
`max_seq_per_s` per running replica would have finished it, and obeys two fault
switches that can be flipped at run time: `outage` (every call fails after the
outbound half of the round trip) and `extra_latency_ms` (added to the round trip).
A cloud without an `emulation` block is never wrapped, so the real path carries
none of this.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from gateway.config import EmulationConfig
from gateway.pools import PoolReply, PoolUnavailable, ReplicaPool

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaultState:
    outage: bool = False
    extra_latency_ms: float = 0.0


class VirtualAccelerator:
    """A device that runs `seq_per_s` sequences per second per replica, in order."""

    def __init__(self, seq_per_s_per_replica: float) -> None:
        self._seq_per_s = seq_per_s_per_replica
        self._free_at_s = 0.0

    def reserve(self, num_texts: int, now_s: float, replicas: int) -> float:
        """Books the device for `num_texts`; returns when that work would finish."""
        start_s = max(now_s, self._free_at_s)
        self._free_at_s = start_s + num_texts / (self._seq_per_s * max(1, replicas))
        return self._free_at_s


class EmulatedPool:
    """A real pool seen through an emulated network and accelerator."""

    def __init__(self, inner: ReplicaPool, emulation: EmulationConfig) -> None:
        self._inner = inner
        self._rtt_s = emulation.rtt_ms / 1000.0
        self._faults = FaultState(emulation.outage, emulation.extra_latency_ms)
        self._cap = emulation.max_seq_per_s or 0.0
        self._device = (
            VirtualAccelerator(emulation.max_seq_per_s)
            if emulation.max_seq_per_s is not None
            else None
        )

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def inner(self) -> ReplicaPool:
        return self._inner

    @property
    def faults(self) -> FaultState:
        return self._faults

    def set_faults(self, faults: FaultState) -> None:
        logger.warning(
            "event=emulation_faults_set cloud=%s outage=%s extra_latency_ms=%.1f",
            self.name,
            faults.outage,
            faults.extra_latency_ms,
        )
        self._faults = faults

    async def classify(
        self, model: str, texts: Sequence[str], *, return_probabilities: bool = False
    ) -> PoolReply:
        faults = self._faults
        half_rtt_s = (self._rtt_s + faults.extra_latency_ms / 1000.0) / 2
        if half_rtt_s > 0:
            await asyncio.sleep(half_rtt_s)
        if faults.outage:
            raise PoolUnavailable(f"cloud {self.name}: emulated outage")

        # The virtual device is booked on arrival; the call ends when both the real
        # replica and the capped device would be done.
        done_s = None
        if self._device is not None:
            done_s = self._device.reserve(
                len(texts), time.monotonic(), self._inner.running_replicas() or 1
            )
        reply = await self._inner.classify(
            model, texts, return_probabilities=return_probabilities
        )
        held_s = 0.0
        if done_s is not None:
            held_s = max(0.0, done_s - time.monotonic())
            if held_s > 0:
                await asyncio.sleep(held_s)
        if half_rtt_s > 0:
            await asyncio.sleep(half_rtt_s)
        compute_s = reply.compute_s
        if self._device is not None:
            replicas = self._inner.running_replicas() or 1
            compute_s = max(compute_s, reply.batch_texts / (self._cap * replicas))
        return replace(
            reply,
            service_s=reply.service_s + held_s,
            compute_s=compute_s,
            network_s=reply.network_s + 2 * half_rtt_s,
        )

    async def check(self, model: str) -> PoolReply | None:
        # Readiness asks whether the model loaded, not whether a fault is on.
        return await self._inner.check(model)

    def running_replicas(self) -> int | None:
        return self._inner.running_replicas()

    def set_running_replicas(self, count: int) -> None:
        self._inner.set_running_replicas(count)
