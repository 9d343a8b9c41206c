"""The replica deployment: one BERT classifier of one model on one cloud's nodes.

Calls carry several texts each. `@serve.batch` gathers concurrent calls up to
`max_batch_size` texts (counted by `batch_size_fn`) or `max_batch_wait_ms`,
classifies them as one flat list, and splits the answers back so that every caller
gets exactly its own results. The reply carries the replica's service time (queue
wait + compute), so the ingress can tell network time from service time, and the
batch size and queue wait, which the ingress records in its histograms: the replica
lives in another process, so its numbers travel back with its results.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ray import serve

from gateway.protocol import TextResult
from replicas.torch_thread import on_torch_thread, on_torch_thread_async

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplicaCall:
    texts: tuple[str, ...]
    return_probabilities: bool
    enqueued_s: float


@dataclass(frozen=True)
class ReplicaReply:
    """One call's answers plus the timings the router and the metrics need."""

    results: tuple[TextResult, ...]
    labels: tuple[str, ...]
    service_s: float
    queue_wait_s: float
    # Replica time the batch used; less than its wall time where batches ran side
    # by side (gateway/local_pool.py lanes).
    compute_s: float
    batch_texts: int
    error: str | None = None


def _count_texts(calls: list[ReplicaCall]) -> int:
    return sum(len(c.texts) for c in calls)


def as_result(pred: Any, labels: Sequence[str], keep_probs: bool) -> TextResult:
    probs = getattr(pred, "probabilities", None)
    if not keep_probs or probs is None:
        probs_tuple = None
    elif isinstance(probs, Mapping):
        probs_tuple = tuple(float(probs[label]) for label in labels)
    else:
        probs_tuple = tuple(float(p) for p in probs)
    return TextResult(
        label=str(pred.label),
        score=float(pred.score),
        truncated=bool(pred.truncated),
        num_tokens=int(getattr(pred, "num_tokens", 0) or 0),
        probabilities=probs_tuple,
    )


@serve.deployment
class ClassifierReplica:
    """Serves one model; placement and sizing come from `.options()` in app.py."""

    def __init__(
        self,
        model_name: str,
        checkpoint_dir: str,
        *,
        cloud: str,
        backend: str = "torch",
        precision: str = "auto",
        packing: bool = True,
        num_threads: int | None = None,
        max_batch_size: int = 32,
        max_batch_wait_ms: float = 2.0,
    ) -> None:
        from replicas.runtime import load_runtime

        self._model_name = model_name
        self._cloud = cloud
        self._max_batch_size = max_batch_size
        # Loaded, like every forward below, on the process's one torch thread.
        self._runtime = on_torch_thread(
            load_runtime,
            checkpoint_dir,
            backend=backend,
            precision=precision,
            num_threads=num_threads,
            packing=packing,
        )
        self._labels = tuple(self._runtime.labels)
        self._batch.set_max_batch_size(max_batch_size)
        self._batch.set_batch_wait_timeout_s(max_batch_wait_ms / 1000.0)
        logger.info(
            "event=replica_started model=%s cloud=%s labels=%d",
            model_name,
            cloud,
            len(self._labels),
        )

    def labels(self) -> tuple[str, ...]:
        return self._labels

    def node_id(self) -> str:
        """The Ray node this replica runs on, to check placement."""
        import ray

        return ray.get_runtime_context().get_node_id()

    async def classify(
        self,
        texts: Sequence[str],
        return_probabilities: bool = False,
        num_requests: int = 1,
    ) -> list[ReplicaReply]:
        """Classifies `texts`, in chunks of at most `max_batch_size`; one reply each.

        `num_requests` is how many client requests the gateway merged into `texts`
        (counted for the autoscaler, see gateway.autoscaling)."""
        now_s = time.perf_counter()
        chunks = [
            tuple(texts[i : i + self._max_batch_size])
            for i in range(0, len(texts), self._max_batch_size)
        ]
        return list(
            await asyncio.gather(
                *(
                    self._batch(ReplicaCall(chunk, return_probabilities, now_s))
                    for chunk in chunks
                )
            )
        )

    @serve.batch(
        max_batch_size=32, batch_wait_timeout_s=0.002, batch_size_fn=_count_texts
    )
    async def _batch(self, calls: list[ReplicaCall]) -> list[ReplicaReply]:
        start_s = time.perf_counter()
        flat = [t for c in calls for t in c.texts]
        want_probs = any(c.return_probabilities for c in calls)
        try:
            # In the torch thread: the loop keeps queueing calls for the next batch.
            preds = await on_torch_thread_async(
                self._runtime.classify, flat, return_probabilities=want_probs
            )
        except Exception:  # noqa: BLE001 - a bad batch must not take the replica down
            logger.exception("event=batch_failed model=%s", self._model_name)
            return await self._one_by_one(calls, start_s)
        end_s = time.perf_counter()

        replies = []
        offset = 0
        for call in calls:
            own = preds[offset : offset + len(call.texts)]
            offset += len(call.texts)
            replies.append(
                ReplicaReply(
                    results=tuple(
                        as_result(p, self._labels, call.return_probabilities)
                        for p in own
                    ),
                    labels=self._labels,
                    service_s=end_s - call.enqueued_s,
                    queue_wait_s=start_s - call.enqueued_s,
                    compute_s=end_s - start_s,
                    batch_texts=len(flat),
                )
            )
        return replies

    async def _one_by_one(
        self, calls: list[ReplicaCall], start_s: float
    ) -> list[ReplicaReply]:
        """After a failed batch, retries each call alone so one bad call fails alone."""
        replies = []
        for call in calls:
            call_start_s = time.perf_counter()
            try:
                preds = await on_torch_thread_async(
                    self._runtime.classify,
                    list(call.texts),
                    return_probabilities=call.return_probabilities,
                )
                results = tuple(
                    as_result(p, self._labels, call.return_probabilities) for p in preds
                )
                error = None
            except Exception as exc:  # noqa: BLE001 - reported to this caller only
                results, error = (), f"{type(exc).__name__}: classification failed"
                logger.warning(
                    "event=call_failed model=%s error=%s",
                    self._model_name,
                    type(exc).__name__,
                )
            end_s = time.perf_counter()
            replies.append(
                ReplicaReply(
                    results=results,
                    labels=self._labels,
                    service_s=end_s - call.enqueued_s,
                    queue_wait_s=start_s - call.enqueued_s,
                    compute_s=end_s - call_start_s,
                    batch_texts=len(call.texts),
                    error=error,
                )
            )
        return replies
