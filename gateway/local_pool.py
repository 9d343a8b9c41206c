"""A colocated cloud: its replicas are the ingress processes themselves.

A cloud with `colocated: true` gets no replica deployment. Each ingress process
loads that cloud's models and classifies on its torch thread
(replicas/torch_thread.py), so a request costs one Serve hop fewer (no call from
the ingress to a replica) and no serialisation of texts or results. The router
cannot tell: it sees a `ReplicaPool` whose network time is zero.

Batching works as in `ServePool`: concurrent requests queue, and while one batch
computes, the next gathers everything that arrived meanwhile (up to
`max_batch_size` texts). With `lanes: 1` (the default) one batch runs at a time per
model, on all of the model's `num_threads`. With more lanes, a queue of several
requests is split into that many batches that run side by side (`RoundCoalescer`),
each on `num_threads / lanes` threads; a lone request still gets all of them.

Why lanes: the forward shares the cores with this process's event loop, and a
forward on two OpenMP threads stalls at every barrier while the loop holds one of
the cores. Measured on 2 cores (demo model, colocated direct ingress, 16 texts
per request, 16 concurrent requests, instrumented): batches of 64 took 92 ms
inside the gateway against 67 ms alone in a process. Two one-thread lanes do not
stall on each other: benchmarks/results/gateway_overhead.json compares one lane
and two (gRPC, one run: 543 against 494 texts/s at one text per request, 744
against 727 at sixteen; the gain at sixteen varied from 2% to 13% between runs).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from gateway.pools import CallLane, CoalescingPool, PoolUnavailable, RoundCoalescer
from gateway.replica import ReplicaReply, as_result
from replicas.torch_thread import on_torch_lane_async, on_torch_thread

logger = logging.getLogger(__name__)

R = TypeVar("R")


class InProcessPool(CoalescingPool):
    """One colocated cloud's models, loaded in this process."""

    def __init__(
        self,
        cloud: str,
        runtimes: Mapping[str, Any],
        max_batch_texts: Mapping[str, int],
        lanes: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__(cloud)
        self._runtimes = dict(runtimes)
        self._labels = {m: tuple(r.labels) for m, r in self._runtimes.items()}
        self._replicas = 1
        lanes = lanes or {}
        self._coalescers = {
            model: RoundCoalescer(
                self._caller(model),
                max_texts=max_batch_texts[model],
                lanes=lanes.get(model, 1),
            )
            for model in self._runtimes
        }

    def _caller(self, model: str) -> CallLane:
        runtime = self._runtimes[model]
        labels = self._labels[model]
        all_threads = int(runtime.num_threads)

        async def call(
            texts: list[str],
            want_probs: bool,
            num_requests: int,
            lane: int,
            calls_in_round: int,
        ) -> list[ReplicaReply]:
            start_s = time.perf_counter()
            threads = max(1, all_threads // calls_in_round)
            try:
                preds = await on_torch_lane_async(
                    lane,
                    _with_threads,
                    threads,
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
            elapsed_s = time.perf_counter() - start_s
            return [
                ReplicaReply(
                    results=tuple(as_result(p, labels, want_probs) for p in preds),
                    labels=labels,
                    service_s=elapsed_s,
                    queue_wait_s=0.0,
                    # The replica's time this batch used: batches that ran beside
                    # it shared the replica, and the dispatcher learns the
                    # replica's texts/s (admission, routing) from this.
                    compute_s=elapsed_s / calls_in_round,
                    batch_texts=len(texts),
                )
            ]

        return call

    def set_running_replicas(self, count: int) -> None:
        # The ingress never reports fewer than one: it is running this pool.
        self._replicas = count


def _with_threads(threads: int, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
    """Calls `fn` with this thread's torch thread count set to `threads`."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return fn(*args, **kwargs)


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
    return InProcessPool(
        cloud,
        runtimes,
        {m.name: m.max_batch_size for m in models},
        {m.name: m.lanes for m in models},
    )
