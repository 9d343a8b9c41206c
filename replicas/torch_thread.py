"""The one thread that makes every torch call of a serving process.

Torch's CPU kernels run on OpenMP, and OpenMP keeps per calling thread both a team
of worker threads and the `torch.set_num_threads` setting. A server that hands
forwards to whichever worker of a thread pool is free (`asyncio.to_thread`) ends up
with several teams taking turns on the same cores. Measured with the demo model
(MiniLM-L6, one short text, 2 threads, 2 cores): 5.5 ms a forward when one thread
does everything, 9.4 ms once a second thread has made a forward, and the first
thread's own forwards stay at 9 ms after that; one dedicated thread, handed each
forward from the event loop, keeps 5.6 ms. A worker thread also ignores the thread
count set on the thread that loaded the model.

So a process that serves loads its runtimes, warms them up and runs every forward
here: `on_torch_thread` from synchronous code (a constructor), `await
on_torch_thread_async` from the event loop. Models of one process share the
thread, so their forwards take turns, as they would on the cores anyway.

The exception is a pool that runs batches side by side (gateway/local_pool.py):
each batch on its own lane, a thread like this one (lane 0 is this one), with a
thread count per lane that keeps the lanes together within the cores.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

_lock = threading.Lock()
_lanes: dict[int, ThreadPoolExecutor] = {}


def torch_executor() -> ThreadPoolExecutor:
    """This process's torch thread, started on first use."""
    return torch_lane(0)


def torch_lane(index: int) -> ThreadPoolExecutor:
    """The thread of lane `index`, started on first use; lane 0 is the torch thread."""
    if index < 0:
        raise ValueError(f"lane must be >= 0, got {index}")
    with _lock:
        lane = _lanes.get(index)
        if lane is None:
            prefix = "torch" if index == 0 else f"torch-lane{index}"
            lane = ThreadPoolExecutor(max_workers=1, thread_name_prefix=prefix)
            _lanes[index] = lane
        return lane


def on_torch_thread(fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """Runs `fn` on the torch thread and waits; not from the torch thread itself."""
    return torch_executor().submit(fn, *args, **kwargs).result()


async def on_torch_thread_async(
    fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
) -> R:
    """Runs `fn` on the torch thread; the event loop goes on meanwhile."""
    return await on_torch_lane_async(0, fn, *args, **kwargs)


async def on_torch_lane_async(
    lane: int, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
) -> R:
    """Runs `fn` on lane `lane`'s thread; the event loop goes on meanwhile."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        torch_lane(lane), functools.partial(fn, *args, **kwargs)
    )
