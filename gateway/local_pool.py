"""A colocated cloud: its replicas are the ingress processes themselves.

A cloud with `colocated: true` gets no replica deployment. Each ingress process
loads that cloud's models and classifies on its torch thread
(replicas/torch_thread.py), so a request costs one Serve hop fewer (no call from
the ingress to a replica) and no serialisation of texts or results. The router
cannot tell: it sees a `ReplicaPool` whose network time is zero.

Batching works as in `ServePool`: concurrent requests queue in a `Coalescer`, and
while one batch computes, the next gathers everything that arrived meanwhile (up to
`max_batch_size` texts). One batch runs at a time per model, since the runtime's
threads already use the cores it was given.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.pools import CallReplica, Coalescer, CoalescingPool, PoolUnavailable
from gateway.replica import ReplicaReply, as_result
from replicas.torch_thread import on_torch_thread, on_torch_thread_async

logger = logging.getLogger(__name__)


class InProcessPool(CoalescingPool):
    """One colocated cloud's models, loaded in this process."""

    def __init__(
        self,
        cloud: str,
        runtimes: Mapping[str, Any],
        max_batch_texts: Mapping[str, int],
    ) -> None:
        super().__init__(cloud)
        self._runtimes = dict(runtimes)
        self._labels = {m: tuple(r.labels) for m, r in self._runtimes.items()}
        self._replicas = 1
        self._coalescers = {
            model: Coalescer(
                self._caller(model), max_texts=max_batch_texts[model], max_in_flight=1
            )
            for model in self._runtimes
        }

    def _caller(self, model: str) -> CallReplica:
        runtime = self._runtimes[model]
        labels = self._labels[model]

        async def call(
            texts: list[str], want_probs: bool, num_requests: int
        ) -> list[ReplicaReply]:
            start_s = time.perf_counter()
            try:
                preds = await on_torch_thread_async(
                    runtime.classify,
                    texts,
                    return_probabilities=want_probs,
                    max_batch_size=len(texts),
                )
            except Exception as exc:  # noqa: BLE001 - reported as this pool failing
                logger.warning(
                    "event=local_batch_failed cloud=%s model=%s error=%s",
                    self._cloud,
                    model,
                    type(exc).__name__,
                )
                raise PoolUnavailable(
                    f"cloud {self._cloud}: {type(exc).__name__}"
                ) from None
            compute_s = time.perf_counter() - start_s
            return [
                ReplicaReply(
                    results=tuple(as_result(p, labels, want_probs) for p in preds),
                    labels=labels,
                    service_s=compute_s,
                    queue_wait_s=0.0,
                    compute_s=compute_s,
                    batch_texts=len(texts),
                )
            ]

        return call

    def set_running_replicas(self, count: int) -> None:
        # The ingress never reports fewer than one: it is running this pool.
        self._replicas = count


def load_local_pool(cloud: str, models: Sequence[Any]) -> InProcessPool:
    """Loads every model (gateway.config.ModelConfig) for a colocated cloud."""
    from replicas.runtime import load_runtime

    runtimes = {}
    for model in models:
        runtimes[model.name] = on_torch_thread(
            load_runtime,
            str(model.checkpoint),
            backend=model.backend,
            precision=model.precision,
            num_threads=model.num_threads,
            packing=model.packing,
        )
        logger.info("event=local_model_loaded cloud=%s model=%s", cloud, model.name)
    return InProcessPool(cloud, runtimes, {m.name: m.max_batch_size for m in models})
