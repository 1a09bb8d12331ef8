"""The optional Dask engine (`--engine dask [--scheduler ADDRESS]`): whole-directory jobs
run on a dask.distributed cluster instead of this machine's processes.

Owns: connecting to a scheduler (or starting a small LocalCluster) and `Cluster`, an
engine of `workers` (the same `map_chunks(func, chunks, *shared)` as `workers.Local`):
the jobs themselves are the local engine's own, written once against that interface
(`fleet.map_members`, `fleet.report`, `audit.check_dir`, `diff.impact_dir`), given this
engine; `shared` values (the parsed catalog, an `Opener`) are scattered to the workers
once, and each worker opens the same service (`workers.service_of`). Workers read
ledgers themselves, so every worker must see the data directory at the same path (a
shared filesystem; see docs/scaling.md). Also the scenario runner on the cluster.

dask is imported lazily, only here and only when this engine is asked for; without
it the engine is a clean `install bonuscli[dask]` error, never a traceback.
Imports model, workers, ledger, fleet, audit, diff, scenario (lazily).
"""

from __future__ import annotations

import os
from pathlib import Path

from bonuscli import workers
from bonuscli.model import BadInput, BonusError, FilesError

VERBOSE = False  # the CLI's --debug: let the libraries' log lines through (else none reaches stderr)
QUIET = 100  # a logging level above CRITICAL: nothing is emitted
_LIBRARY_LOGGERS = ("distributed", "dask", "tornado", "asyncio", "bokeh")
LOCAL_WORKERS = 2  # a LocalCluster when no --scheduler is given: processes, one thread each
CONNECT_TIMEOUT = 10  # seconds to reach a --scheduler before giving up (exit 3)
INSTALL_HINT = "pip install 'bonuscli[dask]'"


# ---------------------------------------------------------------- the cluster


def _distributed():
    try:
        import distributed
    except ImportError:
        raise BadInput(f"the dask engine is not installed: {INSTALL_HINT} (or use --engine local)",
                       "engine-unavailable") from None
    return distributed


def available() -> bool:
    """True when dask.distributed can be imported (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("distributed") is not None


def quiet_logs(level: int) -> None:
    """The libraries' loggers (and the handlers distributed installs) at `level` in this process:
    QUIET unless --debug, so that no log line of Dask, tornado or asyncio reaches stderr (CLI.md §2)."""
    import logging

    for name in _LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        for handler in logger.handlers:
            handler.setLevel(level)
    for name in list(logging.root.manager.loggerDict):  # distributed.nanny & co. set their own levels
        if name.split(".")[0] in _LIBRARY_LOGGERS:
            logging.getLogger(name).setLevel(level)


class Cluster:
    """A dask.distributed Client, as a context manager.

    `Cluster(scheduler)` connects to a running scheduler: `tcp://HOST:PORT` (or any
    address dask accepts), or the path of a scheduler file (`--scheduler-file` of
    `dask scheduler`). `Cluster()` starts a LocalCluster of LOCAL_WORKERS processes
    on this machine and shuts it down on exit.
    """

    portable = True  # what a task needs travels to the workers by value: an Opener, not a Service

    def __init__(self, scheduler: str | None = None, workers: int | None = None):
        self.scheduler = scheduler
        self.workers = workers or LOCAL_WORKERS
        self.client = None
        self._cluster = None

    def __enter__(self) -> "Cluster":
        import logging

        distributed = _distributed()
        level = logging.WARNING if VERBOSE else QUIET
        quiet_logs(level)
        if self.scheduler is None:
            try:
                # no dashboard; the scheduler's always-on HTTP endpoint on a free loopback port (its
                # default, 8787, warns on stderr when another cluster holds it)
                self._cluster = distributed.LocalCluster(
                    n_workers=self.workers, threads_per_worker=1, processes=True, dashboard_address=None,
                    host="127.0.0.1", scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                    silence_logs=level)
                # `silence_logs` reaches our own workers' processes, which write to our stderr (a
                # heartbeat's traceback at shutdown, say); a --scheduler's workers log where their
                # operator runs them
                self.client = distributed.Client(self._cluster, set_as_default=False)
            except Exception as e:
                self.close()
                raise FilesError(f"cannot start a local dask cluster ({type(e).__name__}: {e})",
                                 "engine-unavailable") from None
            return self
        address = self.scheduler.strip()
        if not address:
            raise BadInput("--scheduler: empty address (give tcp://HOST:PORT or a scheduler file)", "usage")
        kw = {"scheduler_file": address} if address.endswith(".json") and os.path.isfile(address) \
            else {"address": address}
        try:
            self.client = distributed.Client(timeout=CONNECT_TIMEOUT, set_as_default=False, **kw)
        except ValueError as e:  # an address dask cannot parse
            raise BadInput(f"--scheduler {address}: not a scheduler address ({e}); "
                           "give tcp://HOST:PORT or a scheduler file", "usage") from None
        except (OSError, TimeoutError) as e:
            raise FilesError(f"cannot reach the dask scheduler at {address} within {CONNECT_TIMEOUT} s "
                             f"({type(e).__name__}: {e}); is `dask scheduler` running there?",
                             "scheduler-unreachable") from None
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        for thing in (self.client, self._cluster):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # pragma: no cover - shutting down is best effort
                    pass
        self.client = self._cluster = None

    def n_workers(self) -> int:
        try:
            return max(1, len(self.client.scheduler_info()["workers"]))
        except Exception:  # pragma: no cover
            return self.workers

    def map_chunks(self, func, chunks, *shared) -> list:
        """[func(*shared, chunk) for chunk in chunks], computed on the cluster, in input order.

        `shared` values (the catalog, ...) are scattered to every worker once. A
        BonusError raised by `func` comes back as itself (kind and exit code kept);
        a worker lost or a cluster failure is a FilesError (exit 3)."""
        chunks = list(chunks)
        if not chunks:
            return []
        distributed = _distributed()
        try:
            # one future per value (a bare tuple/dict would be scattered item by item), fresh keys (a
            # hashed key can collide with the same catalog released by the previous call)
            big = [self.client.scatter([v], broadcast=True, hash=False)[0] if _worth_scattering(v) else v
                   for v in shared]
            futures = [self.client.submit(workers.call, func, *big, chunk, pure=False) for chunk in chunks]
            results = self.client.gather(futures)
        except BonusError:
            raise
        except Exception as e:  # a worker lost, the scheduler gone, a task cancelled: not the data's fault
            if isinstance(e, (distributed.CancelledError, TimeoutError)) or \
                    type(e).__module__.split(".")[0] in ("distributed", "dask", "tornado"):
                raise FilesError(f"the dask cluster failed ({type(e).__name__}: {e})", "engine-failed") from None
            raise
        return workers.first_failure(results)  # the first failure in input order, as a serial run meets it


def map_chunks(func, chunks, *shared, scheduler: str | None = None, cluster: Cluster | None = None) -> list:
    """[func(*shared, chunk) for chunk in chunks] on Dask, results in input order.

    Uses `cluster` when given (tests share one), else connects to `scheduler`, else
    starts a LocalCluster for this call."""
    if cluster is not None:
        return cluster.map_chunks(func, chunks, *shared)
    with Cluster(scheduler) as c:
        return c.map_chunks(func, chunks, *shared)


def _worth_scattering(v) -> bool:
    import datetime

    return not (callable(v) or isinstance(v, (str, bytes, int, float, type(None), os.PathLike, datetime.date)))


# ---------------------------------------------------------------- the jobs: the same functions as the local engine's


def _on(cluster, scheduler, job):
    """`job(cluster)` on the cluster given (tests share one), else on one connected to `scheduler`
    (or a LocalCluster) for this call."""
    if cluster is not None:
        return job(cluster)
    with Cluster(scheduler) as c:
        return job(c)


def map_members(svc, now, func=None, scheduler: str | None = None, cluster: Cluster | None = None) -> list:
    """fleet.map_members on Dask (every result travels back here)."""
    from bonuscli import fleet

    return _on(cluster, scheduler, lambda c: fleet.map_members(svc, now, func, engine=c))


def report(svc, now, region=None, from_date=None, until_date=None, scheduler: str | None = None,
           cluster: Cluster | None = None) -> dict:
    """fleet.report on Dask: each chunk reduced on its worker (fleet.report_part), added up here."""
    from bonuscli import fleet

    return _on(cluster, scheduler, lambda c: fleet.report(svc, now, region, from_date, until_date, engine=c))


def check_dir(svc, now, scheduler: str | None = None, cluster: Cluster | None = None) -> list:
    """audit.check_dir on Dask."""
    return check_dir_summary(svc, now, scheduler, cluster)["problems"]


def check_dir_summary(svc, now, scheduler: str | None = None, cluster: Cluster | None = None) -> dict:
    """audit.check_dir_summary on Dask."""
    from bonuscli import audit

    return _on(cluster, scheduler, lambda c: audit.check_dir_summary(svc, now, engine=c))


def impact(old, new, root, now, scheduler: str | None = None, cluster: Cluster | None = None, warn=None) -> dict:
    """diff.impact_dir on Dask: the same document (workers must see the data directory at `root`)."""
    from bonuscli import diff
    from bonuscli import ledger as ledger_mod

    store = ledger_mod.Store(Path(root))
    return _on(cluster, scheduler, lambda c: diff.impact_dir(old, new, store, now, warn=warn, engine=c))


# ---------------------------------------------------------------- check --scenario


class _Missing:  # scenario.MISSING is an `object()`; it does not survive pickling
    pass


def _portable(r, to_wire: bool):
    from bonuscli import scenario

    src, dst = (scenario.MISSING, _Missing) if to_wire else (_Missing, scenario.MISSING)

    def conv(v):
        return dst if v is src else v

    return r._replace(failures=[f._replace(expected=conv(f.expected), got=conv(f.got)) for f in r.failures])


def scenarios_part(default_catalog, files) -> list:
    from bonuscli import scenario

    return [_portable(scenario.run_one(str(f), default_catalog), True) for f in files]


def run_scenarios(files, default_catalog, scheduler: str | None = None, cluster: Cluster | None = None) -> list:
    """[scenario.run_one(f, default_catalog) for f in files] on Dask, one file per task, in order.
    Workers must see the scenario files (and the catalogs they name) at the same paths."""
    chunks = [[str(f)] for f in files]
    if cluster is not None:
        parts = cluster.map_chunks(scenarios_part, chunks, default_catalog)
    else:
        with Cluster(scheduler) as c:
            parts = c.map_chunks(scenarios_part, chunks, default_catalog)
    return [_portable(r, False) for part in parts for r in part]
