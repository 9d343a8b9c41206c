"""The colocated pool: real forward passes in this process, coalesced per model."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.local_pool import InProcessPool
from gateway.pools import PoolUnavailable
from replicas.runtime import load_runtime

MODEL = "demo-intents"
SIZES = [1, 3, 5, 2, 4, 1, 5, 3, 2, 1, 4, 5]


@pytest.fixture(scope="module")
def pool(demo_model_dir: Path) -> InProcessPool:
    runtime = load_runtime(demo_model_dir, precision="fp32", num_threads=1)
    return InProcessPool("local", {MODEL: runtime}, {MODEL: 8})


def test_concurrent_requests_each_get_their_own_answers(
    pool: InProcessPool, demo_test_texts: list[tuple[str, str]]
) -> None:
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
