"""The colocated pool: real forward passes in this process, coalesced per model."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from gateway import local_pool
from gateway.local_pool import InProcessPool
from gateway.pools import PoolUnavailable, _balanced, _Waiter
from replicas.runtime import load_runtime

MODEL = "demo-intents"
SIZES = [1, 3, 5, 2, 4, 1, 5, 3, 2, 1, 4, 5]


@pytest.fixture(scope="module")
def pool(demo_model_dir: Path) -> InProcessPool:
    runtime = load_runtime(demo_model_dir, precision="fp32", num_threads=1)
    return InProcessPool("local", {MODEL: runtime}, {MODEL: 8})


def _send_mixed_requests(
    pool: InProcessPool, demo_test_texts: list[tuple[str, str]]
) -> list:
    """Twelve requests of 1-5 texts at once; asserts each got its own labels."""
    runtime = pool._runtimes[MODEL]
    requests = [
        [text for text, _ in demo_test_texts[i : i + size]]
        for i, size in zip(range(0, 60, 5), SIZES, strict=True)
    ]
    expected = [[p.label for p in runtime.classify(texts)] for texts in requests]

    async def send_all() -> list:
        return await asyncio.gather(*(pool.classify(MODEL, t) for t in requests))

    replies = asyncio.run(send_all())
    assert [[r.label for r in reply.results] for reply in replies] == expected
    return replies


def test_concurrent_requests_each_get_their_own_answers(
    pool: InProcessPool, demo_test_texts: list[tuple[str, str]]
) -> None:
    replies = _send_mixed_requests(pool, demo_test_texts)

    # Twelve requests, 40 texts, at most 8 texts a batch: they were merged, and no
    # batch went over the limit.
    assert all(reply.batch_texts <= 8 for reply in replies)
    assert max(reply.batch_texts for reply in replies) > 5
    assert all(reply.network_s == 0.0 for reply in replies)


def test_probabilities_only_for_the_caller_that_asked(pool: InProcessPool) -> None:
    async def both() -> list:
        return await asyncio.gather(
            pool.classify(MODEL, ["my card was declined"], return_probabilities=True),
            pool.classify(MODEL, ["my card was declined"]),
        )

    with_probs, without = asyncio.run(both())

    assert with_probs.results[0].probabilities is not None
    assert len(with_probs.results[0].probabilities) == len(with_probs.labels)
    assert without.results[0].probabilities is None
    assert with_probs.results[0].label == without.results[0].label


def test_unknown_model_and_readiness(pool: InProcessPool) -> None:
    with pytest.raises(PoolUnavailable, match="does not serve model other"):
        asyncio.run(pool.classify("other", ["hello"]))
    reply = asyncio.run(pool.check(MODEL))
    assert reply is not None and len(reply.results) == 1
    assert pool.running_replicas() == 1


@pytest.fixture(scope="module")
def two_lane_pool(demo_model_dir: Path) -> InProcessPool:
    runtime = load_runtime(demo_model_dir, precision="fp32", num_threads=2)
    return InProcessPool("local", {MODEL: runtime}, {MODEL: 8}, {MODEL: 2})


def test_two_lanes_run_side_by_side_within_the_threads_and_answer_each_caller(
    two_lane_pool: InProcessPool,
    demo_test_texts: list[tuple[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[float, float, int, str, int]] = []
    real = local_pool._with_threads

    def recorded(threads: int, fn, *args, **kwargs):
        start = time.perf_counter()
        try:
            return real(threads, fn, *args, **kwargs)
        finally:
            name = threading.current_thread().name
            calls.append((start, time.perf_counter(), threads, name, len(args[0])))

    monkeypatch.setattr(local_pool, "_with_threads", recorded)
    replies = _send_mixed_requests(two_lane_pool, demo_test_texts)

    # A batch that shared the replica with another charges it half its wall time,
    # so texts / compute_s is the replica's rate, not one lane's.
    assert any(r.compute_s < r.service_s * 0.6 for r in replies)
    runtime = two_lane_pool._runtimes[MODEL]
    assert {name.split("_")[0] for *_, name, _ in calls} == {"torch", "torch-lane1"}
    # Never more threads at once than the model was given: at each call's start,
    # the calls running then hold at most two threads together.
    for start, *_ in calls:
        running = [t for s, e, t, _, _ in calls if s <= start < e]
        assert sum(running) <= 2, calls
    side_by_side = [c for c in calls if c[2] == 1]
    assert side_by_side, "a queue of twelve requests never split into two lanes"

    calls.clear()
    lone = asyncio.run(two_lane_pool.classify(MODEL, ["where is my parcel"]))
    assert lone.results[0].label == runtime.classify(["where is my parcel"])[0].label
    assert [(threads, name.split("_")[0]) for _, _, threads, name, _ in calls] == [
        (2, "torch")
    ]
    assert lone.compute_s == lone.service_s


def test_a_round_splits_queued_requests_into_balanced_lanes() -> None:
    loop = asyncio.new_event_loop()
    try:
        sizes = (5, 1, 4, 2, 3)
        waiters = [_Waiter(["t"] * n, False, loop.create_future()) for n in sizes]
        groups = _balanced(waiters, 2)
    finally:
        loop.close()
    assert sorted(sum(len(w.texts) for w in g) for g in groups) == [7, 8]
    assert sorted(len(w.texts) for g in groups for w in g) == [1, 2, 3, 4, 5]
