"""Every torch call of a serving process on one thread: loading and forwards."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from replicas.runtime import load_runtime
from replicas.torch_thread import on_torch_thread, on_torch_thread_async


def test_loading_and_every_forward_run_on_the_same_thread(
    demo_model_dir: Path, demo_test_texts: list[tuple[str, str]]
) -> None:
    threads: list[int] = []

    def load() -> object:
        threads.append(threading.get_ident())
        return load_runtime(demo_model_dir, precision="fp32", num_threads=1)

    runtime = on_torch_thread(load)
    texts = [text for text, _ in demo_test_texts[:12]]
    real_classify = runtime.classify

    def recording_classify(batch: list[str]) -> list:
        threads.append(threading.get_ident())
        return real_classify(batch)

    async def concurrently() -> list:
        # Several callers at once, as concurrent batches of a replica would be.
        return await asyncio.gather(
            *(on_torch_thread_async(recording_classify, [t]) for t in texts)
        )

    answers = asyncio.run(concurrently())

    assert [a[0].label for a in answers] == [p.label for p in real_classify(texts)]
    assert len(threads) == 1 + len(texts)
    assert set(threads) == {threads[0]}
    assert threads[0] != threading.get_ident()
