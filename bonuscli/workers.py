"""THE map/reduce of every whole-directory job (report, check --ledgers, export, diff --ledgers),
whichever engine runs it.

An engine maps a module-level function over chunks of work:
`engine.map_chunks(func, chunks, *shared)` is `[func(*shared, chunk) for chunk in chunks]`, in
input order, and a `BonusError` raised by `func` comes back as itself (its kind and exit code
kept; the first one in input order, as a serial run would meet it). `n_workers()` says how many
chunks it runs at once, and `portable` whether `shared` must travel (by value, to other
machines) or is inherited.

Two engines: `Local(jobs)`, this machine (serially, or `jobs` forked worker processes that
inherit `shared`, so only the chunks and the answers travel), and `dask_engine.Cluster`, a
Dask cluster. The jobs themselves (`fleet.map_members`, `fleet.report`, `diff.impact_dir`,
`simulate.compare`) are written once, against this interface.

Also: the guard that ends a worker whose parent is gone, and a service opened once per worker
process. Stdlib only (and model's error types).
"""

from __future__ import annotations

import os

from bonuscli.model import BonusError

MIN_CHUNK = 50  # items per chunk at least: a chunk costs ~1 ms of scheduling, an item ~0.1-1 ms of work


def chunked(items, n_workers: int, min_size: int | None = None) -> list:
    """Consecutive slices of `items`, about 8 per worker (so a slow shard does not stall the rest)."""
    items = list(items)
    min_size = MIN_CHUNK if min_size is None else min_size
    size = max(min_size, -(-len(items) // (n_workers * 8)) if items else min_size)
    return [items[i:i + size] for i in range(0, len(items), size)]


class Raised:
    """A BonusError raised in a worker, carried back as data (an exception loses its kind on the way)."""

    def __init__(self, e: BonusError):
        self.cls, self.message, self.kind, self.steps = type(e), e.message, e.kind, e.steps

    def throw(self):
        raise self.cls(self.message, self.kind, self.steps)


def call(func, *args):
    """`func(*args)`, or the BonusError it raised as a `Raised`."""
    try:
        return func(*args)
    except BonusError as e:
        return Raised(e)


def first_failure(results) -> list:
    """`results`, unless one is a `Raised`: then the first of them, raised."""
    for r in results:
        if isinstance(r, Raised):
            r.throw()
    return results


def orphan_guard(parent: int, every: float = 0.5) -> None:
    """In a worker process: end it as soon as the parent that started it is gone (killed), so no
    worker is left running, or waiting forever for work that will never come. On Linux the kernel
    kills it the moment the parent dies (a worker of a killed batch writes nothing more); elsewhere
    a thread watching the parent does, within `every` seconds."""
    import threading
    import time

    if _die_with_parent() and os.getppid() != parent:
        os.kill(os.getpid(), 9)  # the parent died before the kernel was asked: at once

    def watch():
        while True:
            time.sleep(every)
            if os.getppid() != parent:
                import signal

                os.kill(os.getpid(), signal.SIGKILL)  # at once: no cleanup may run for a parent that is gone

    threading.Thread(target=watch, name="bonuscli-orphan-guard", daemon=True).start()


def _die_with_parent() -> bool:
    """Linux: have the kernel SIGKILL this process when its parent dies (prctl PR_SET_PDEATHSIG; the
    parent here is the thread that forked it, the pool's caller, which lives as long as the pool).
    False where that is not available."""
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(1, 9, 0, 0, 0) == 0  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):
        return False


_IN_WORKER = False
_TASK: dict = {}  # what a forked worker inherits: the function and the shared values
_OPENED: dict = {}


def in_worker() -> bool:
    """True in a worker process of `Local` (its output would be lost: open a quiet service)."""
    return _IN_WORKER


def service_of(svc):
    """The service a job's function uses: `svc` itself in this process; in a worker process (or on
    a Dask worker, given an Opener), the same data directory opened once per process, quietly."""
    opener = svc if not hasattr(svc, "store") else (svc.opener if _IN_WORKER else None)
    if opener is None:
        return svc
    opened = _OPENED.get(opener)
    if opened is None:
        opened = _OPENED[opener] = opener.open(warn=lambda msg: None)
    return opened


def _worker_start(parent: int) -> None:
    global _IN_WORKER
    _IN_WORKER = True
    orphan_guard(parent)


def _run(chunk):
    return call(_TASK["func"], *_TASK["shared"], chunk)


def can_fork() -> bool:
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods()


class Local:
    """This machine's engine: `jobs` processes (default: the core count); serially when `jobs` is
    1, when there is one chunk, or where processes cannot be forked."""

    portable = False

    def __init__(self, jobs: int | None = None):
        self.jobs = max(1, jobs or os.cpu_count() or 1)

    def __enter__(self) -> "Local":
        return self

    def __exit__(self, *exc):
        return False

    def n_workers(self) -> int:
        return self.jobs

    def map_chunks(self, func, chunks, *shared) -> list:
        chunks = list(chunks)
        if self.jobs <= 1 or len(chunks) < 2 or not can_fork():
            return [func(*shared, chunk) for chunk in chunks]
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        _TASK.update(func=func, shared=shared)
        try:
            with ProcessPoolExecutor(max_workers=min(self.jobs, len(chunks)),
                                     mp_context=multiprocessing.get_context("fork"),
                                     initializer=_worker_start, initargs=(os.getpid(),)) as pool:
                return first_failure(list(pool.map(_run, chunks)))
        finally:
            _TASK.clear()
