"""The bounded recognition pool: a fixed number of worker threads and a bounded wait; a request
beyond both is refused at once (503 + Retry-After) instead of queueing without end."""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable


class BusyError(Exception):
    """Every worker is busy and the queue is full."""


class BoundedPool:
    """``workers`` threads; at most ``workers + queue`` jobs admitted at once.

    Threads, not processes: the models are loaded once per process and torch / onnxruntime release
    the GIL while they compute; each worker's intra-op thread count is set by the server so that
    workers × threads stay within the cores.
    """

    def __init__(self, workers: int, queue: int) -> None:
        self.workers = int(workers)
        self.limit = int(workers) + int(queue)
        self._ex = ThreadPoolExecutor(self.workers, thread_name_prefix="pifr-worker")
        self._lock = threading.Lock()
        self._admitted = 0

    @property
    def admitted(self) -> int:
        """Jobs running or waiting now."""
        return self._admitted

    def _release(self, _fut: Any) -> None:
        with self._lock:
            self._admitted -= 1

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on a worker and await its result. Raises BusyError when full."""
        with self._lock:
            if self._admitted >= self.limit:
                raise BusyError(f"all {self.workers} workers are busy and {self.limit - self.workers} requests wait")
            self._admitted += 1
        try:
            fut = self._ex.submit(fn, *args)
        except BaseException:
            self._release(None)
            raise
        # Released when the job ends, not when the client goes away: the slot is busy until then.
        fut.add_done_callback(self._release)
        return await asyncio.wrap_future(fut)

    def shutdown(self) -> None:
        self._ex.shutdown(wait=False, cancel_futures=True)
