"""The optional Dask engine (`--engine dask [--scheduler ADDRESS]`): whole-directory jobs
mapped over a dask.distributed cluster instead of this machine's process pool.

Owns: connecting to a scheduler (or starting a small LocalCluster), shipping the
parsed catalog to the workers once, mapping the SAME pure per-member functions the
local engine uses (fleet.member_summary, audit.check_member, diff.impact,
scenario.run_one), each opening the same service on the worker
(`service.Opener`), over chunks of members, and reducing the partial results
exactly as the local path does (integer sums; lists put back in phone or request
order). Workers read ledgers themselves, so every worker must see the data
directory at the same path (a shared filesystem; see docs/scaling.md).

dask is imported lazily, only here and only when this engine is asked for; without
it the engine is a clean `install bonuscli[dask]` error, never a traceback.
Imports model, service, ledger, fleet, audit, diff, simulate, scenario (lazily).
"""

from __future__ import annotations

import os
from pathlib import Path

from bonuscli.model import BadInput, BonusError, FilesError

LOCAL_WORKERS = 2  # a LocalCluster when no --scheduler is given: processes, one thread each
CONNECT_TIMEOUT = 10  # seconds to reach a --scheduler before giving up (exit 3)
MIN_CHUNK = 50  # members per task; a task costs ~1 ms of scheduling, a member ~0.1-1 ms of work
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


class Cluster:
    """A dask.distributed Client, as a context manager.

    `Cluster(scheduler)` connects to a running scheduler: `tcp://HOST:PORT` (or any
    address dask accepts), or the path of a scheduler file (`--scheduler-file` of
    `dask scheduler`). `Cluster()` starts a LocalCluster of LOCAL_WORKERS processes
    on this machine and shuts it down on exit.
    """

    def __init__(self, scheduler: str | None = None, workers: int | None = None):
        self.scheduler = scheduler
        self.workers = workers or LOCAL_WORKERS
        self.client = None
        self._cluster = None

    def __enter__(self) -> "Cluster":
        import logging

        distributed = _distributed()
        if self.scheduler is None:
            try:
                # no dashboard; the scheduler's always-on HTTP endpoint on a free loopback port (its
                # default, 8787, warns on stderr when another cluster holds it)
                self._cluster = distributed.LocalCluster(
                    n_workers=self.workers, threads_per_worker=1, processes=True, dashboard_address=None,
                    host="127.0.0.1", scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                    silence_logs=logging.ERROR)
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
            futures = [self.client.submit(_call, func, *big, chunk, pure=False) for chunk in chunks]
            results = self.client.gather(futures)
        except BonusError:
            raise
        except Exception as e:  # a worker lost, the scheduler gone, a task cancelled: not the data's fault
            if isinstance(e, (distributed.CancelledError, TimeoutError)) or \
                    type(e).__module__.split(".")[0] in ("distributed", "dask", "tornado"):
                raise FilesError(f"the dask cluster failed ({type(e).__name__}: {e})", "engine-failed") from None
            raise
        for r in results:  # the first failure in input order, as the serial path would meet it
            if isinstance(r, _Raised):
                r.throw()
        return results


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


class _Raised:
    """A BonusError raised on a worker, carried back as data (exceptions lose their kind in pickling)."""

    def __init__(self, e: BonusError):
        self.cls, self.message, self.kind, self.steps = type(e), e.message, e.kind, e.steps

    def throw(self):
        raise self.cls(self.message, self.kind, self.steps)


def _call(func, *args):
    try:
        return func(*args)
    except BonusError as e:
        return _Raised(e)


def chunked(items, n_workers: int, min_size: int | None = None) -> list:
    """Consecutive slices of `items`, about 8 per worker (so a slow shard does not stall the rest)."""
    items = list(items)
    min_size = MIN_CHUNK if min_size is None else min_size
    size = max(min_size, -(-len(items) // (n_workers * 8)) if items else min_size)
    return [items[i:i + size] for i in range(0, len(items), size)]


# ---------------------------------------------------------------- per member


_OPENED: dict = {}


def _service(opener):
    """The worker's service for this opener (opened once per worker process)."""
    svc = _OPENED.get(opener)
    if svc is None:
        svc = _OPENED[opener] = opener.open(warn=lambda msg: None)
    return svc


def members_part(func, opener, now, phones) -> list:
    """[func(svc, phone, now) for phone in phones]: one task's share of fleet.map_members."""
    svc = _service(opener)
    return [func(svc, p, now) for p in phones]


def map_members(svc, now, func=None, scheduler: str | None = None, cluster: Cluster | None = None) -> list:
    """fleet.map_members on Dask: `func(svc, phone, now)` (a module-level function returning
    plain data; by default fleet's report summary) for every ledger, in phone order.

    Every result travels back to this process; `report` and `check_dir` below reduce less data."""
    from bonuscli import fleet

    func = func or fleet.member_summary
    phones = svc.store.phones()

    def run(c):
        return [r for part in c.map_chunks(members_part, chunked(phones, c.n_workers()), func, svc.opener, now)
                for r in part]

    if cluster is not None:
        return run(cluster)
    with Cluster(scheduler) as c:
        return run(c)


# ---------------------------------------------------------------- report


def report_part(opener, now, region, from_date, until_date, phones):
    """fleet.report over one chunk of members, on a worker: (partial report, problems).

    The partial report is fleet's own reduction over the chunk, so every figure is
    computed by the local engine's code; the client only adds them up."""
    from bonuscli import fleet

    svc = _service(opener)
    summaries = [fleet.member_summary(svc, p, now) for p in phones]
    try:
        return fleet.report(svc, now, region, from_date, until_date, summaries=summaries), []
    except FilesError:  # corrupt ledgers in this chunk: name them all, as the local reduction does
        return None, [s["error"] for s in summaries if s is not None and "error" in s]


def report(svc, now, region=None, from_date=None, until_date=None, scheduler: str | None = None,
           cluster: Cluster | None = None) -> dict:
    """fleet.report on Dask, reduced on the workers chunk by chunk, then added up here."""
    from bonuscli import fleet

    phones = svc.store.phones()

    def run(c):
        return c.map_chunks(report_part, chunked(phones, c.n_workers()), svc.opener, now, region, from_date,
                            until_date)

    if cluster is not None:
        parts = run(cluster)
    else:
        with Cluster(scheduler) as c:
            parts = run(c)
    problems = [p for _, probs in parts for p in probs]
    if problems:  # fleet.report's own message
        raise FilesError(f"{problems[0]}" + (f" (and {len(problems) - 1} more ledgers)" if len(problems) > 1 else ""),
                         "ledger-corrupt")
    if not parts:  # an empty directory: the local engine's answer over no members
        return fleet.report(svc, now, region, from_date, until_date, summaries=[])
    out = parts[0][0]
    for doc, _ in parts[1:]:
        out = merge_reports(out, doc)
    out["regions"] = dict(sorted(out["regions"].items()))
    return out


def merge_reports(a, b):
    """Add up two partial reports: numbers add, dicts merge by key, lists of {month: ...} merge
    by month (kept sorted), anything else (as_of, region) must agree."""
    if isinstance(a, bool) or isinstance(b, bool):
        if a != b:
            raise ValueError(f"cannot merge {a!r} and {b!r}")
        return a
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for k, v in b.items():
            out[k] = merge_reports(out[k], v) if k in out else v
        return out
    if isinstance(a, list) and isinstance(b, list) and all(isinstance(x, dict) and "month" in x for x in a + b):
        by = {x["month"]: x for x in a}
        for x in b:
            by[x["month"]] = merge_reports(by[x["month"]], x) if x["month"] in by else x
        return [by[k] for k in sorted(by)]
    if a != b:
        raise ValueError(f"cannot merge {a!r} and {b!r}")
    return a


# ---------------------------------------------------------------- check --ledgers


def check_dir(svc, now, scheduler: str | None = None, cluster: Cluster | None = None) -> list:
    """audit.check_dir on Dask: audit.check_member per ledger (each reads the peers it needs),
    reduced as the local path does: unreadable ledgers first, then each ledger's problems in
    phone order."""
    from bonuscli import audit

    unreadable, problems = [], []
    for found in map_members(svc, now, audit.check_member, scheduler=scheduler, cluster=cluster):
        for p in found:
            (unreadable if p.pop("unreadable", False) else problems).append(p)
    return unreadable + problems


# ---------------------------------------------------------------- diff --ledgers

def links_part(root, phones) -> list:
    """diff.read_links over a chunk of the data directory (an unreadable ledger's error as data)."""
    from bonuscli import diff
    from bonuscli import ledger as ledger_mod

    return diff.read_links(ledger_mod.FileStore(Path(root)), phones, _Raised)


def impact_part(old, new, root, now, phones):
    """diff.group_impact over a group of whole link-components (members no request outside the
    group can touch): its document and the global order keys of its changes."""
    from bonuscli import diff
    from bonuscli import ledger as ledger_mod

    store = ledger_mod.FileStore(Path(root))
    ledgers = {p: [e for e in store.read(p).events if e.get("type") != "repair"] for p in phones}
    return diff.group_impact(old, new, ledgers, now)


def impact(old, new, root, now, scheduler: str | None = None, cluster: Cluster | None = None, warn=None) -> dict:
    """diff.read_ledgers + diff.impact on Dask: the same document.

    Phase 1 reads every ledger on the workers for the members it involves; phase 2
    replays whole components (union-find over gifts and referrals) under both
    catalogs, a group of components per task; the client merges member rows by
    phone and outcome changes by the requests' global order (diff.merge_impacts)."""
    from bonuscli import diff, rules
    from bonuscli import ledger as ledger_mod

    if warn is None:
        def warn(msg):
            pass
    root = Path(root)
    phones = ledger_mod.Store(root).phones()

    def run(c):
        n = c.n_workers()
        linked = {}
        for part in c.map_chunks(links_part, chunked(phones, n), root):
            for item in part:
                if isinstance(item, _Raised):
                    item.throw()
                phone, others, warning = item
                if warning:
                    warn(warning)
                if others:
                    linked[phone] = others
        groups, cur, size = [], [], max(MIN_CHUNK, -(-len(phones) // (n * 8)))
        for comp in rules.components(linked, phones):
            cur.extend(comp)
            if len(cur) >= size:
                groups.append(cur)
                cur = []
        if cur or not groups:
            groups.append(cur)
        return c.map_chunks(impact_part, groups, old, new, root, now)

    if cluster is not None:
        parts = run(cluster)
    else:
        with Cluster(scheduler) as c:
            parts = run(c)
    return diff.merge_impacts([d for d, _, _ in parts], [k for _, k, _ in parts], [u for _, _, u in parts])


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
