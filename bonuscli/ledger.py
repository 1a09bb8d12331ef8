"""The store: one JSON-lines ledger per member, read whole, appended under a lock.

Owns: parsing ledgers (torn final line -> warning, repaired lines skipped, an
unknown event type or anything else unreadable -> FilesError naming path:line,
file untouched), exclusive fcntl locks taken in a fixed order with a timeout,
appends of whole lines followed by fsync, modes 0700/0600, and derived
snapshots (plain JSON, never executed; any doubt is a miss). `FileStore` is a
data directory; `MemoryStore` holds the same bytes in memory for simulations
(diff, scenarios), so both go through the same parser and chain.
Imports model and paths.
"""

from __future__ import annotations

import errno
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple, Optional

from bonuscli import paths
from bonuscli.model import EVENT_TYPES, SCHEMA_VERSION, FilesError

try:  # a fast decoder when installed (docs/performance.md: ~5x faster than json.loads a line)
    from orjson import JSONDecodeError as _DecodeError
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - orjson is a dependency; the stdlib gives the same values
    _loads = json.loads
    _DecodeError = json.JSONDecodeError

LOCK_TIMEOUT = 10.0
REQUIRED = ("v", "id", "type", "at")


def _dumps(doc) -> bytes:
    """Plain data as compact JSON bytes (orjson when installed: a snapshot is megabytes)."""
    try:
        import orjson

        return orjson.dumps(doc)
    except ImportError:  # pragma: no cover
        return json.dumps(doc, separators=(",", ":")).encode()


def decode(raw: bytes):
    """One ledger line's JSON value (ValueError when it is not JSON)."""
    return _loads(raw)


class Torn(NamedTuple):
    line: int
    offset: int


class LedgerRead(NamedTuple):
    path: Path
    events: tuple  # dicts, oldest first, repair events included
    torn: Optional[Torn]
    size: int
    tail: bytes = b""  # the last line's bytes (the torn text when torn): what the next `prev` hashes
    pretail: Optional[bytes] = None  # when torn: the last complete line, which the repair links to
    lines: int = 0  # complete lines in the file


def line_hash(raw: bytes) -> str:
    """The hash chain's link: 128 bits of SHA-256 over a line's bytes (without its newline)."""
    import hashlib

    return hashlib.sha256(raw).hexdigest()[:32]


def verify_chain(path: Path, data: bytes) -> list:
    """(line, message) for every line whose `prev` does not match the line before it.

    Lines of schema 1 carry no link and are not checked; a torn last line is not a problem here.
    """
    out = []
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        lines.pop()
    prev_raw = None
    for n, raw in enumerate(lines, start=1):
        try:
            event = _loads(raw)
        except ValueError:
            prev_raw = raw
            continue
        if isinstance(event, dict) and event.get("type") == "repair" and "torn_prev" in event:
            line = event.get("line")
            if isinstance(line, int) and 1 <= line < n:
                before = lines[line - 2] if line >= 2 else None
                if event["torn_prev"] != (line_hash(before) if before is not None else ""):
                    out.append((line - 1 if line > 1 else line, "hash chain broken: this line was edited, deleted "
                                "or reordered (the repair at line %d recorded it differently)" % n))
        if isinstance(event, dict) and isinstance(event.get("v"), int) and event["v"] >= 2:
            want = line_hash(prev_raw) if prev_raw is not None else ""
            if event.get("prev") != want:
                what = "the first line" if prev_raw is None and event.get("prev") else f"line {n - 1}"
                out.append((n, f"hash chain broken: this line does not follow {what} as written "
                               "(a line above was edited, deleted or reordered)"))
        prev_raw = raw
    return out


def _corrupt(path: Path, line: int, why: str) -> FilesError:
    return FilesError(
        f"{path}:{line}: corrupt ledger line ({why}); nothing was changed. "
        "Restore the file from a backup, or inspect it with `bonuscli check --ledgers`",
        "ledger-corrupt",
    )


def parse(path: Path, data: bytes, first: int = 1, base: int = 0, before: Optional[bytes] = None) -> LedgerRead:
    """Parse a ledger's bytes. Pure: no I/O.

    For a tail read (after a checkpoint), `data` starts at byte `base`, on line `first`, and
    `before` is the last line ahead of it.
    """
    torn = None
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        torn_text = lines.pop()
        torn = Torn(len(lines) + first, base + len(data) - len(torn_text))
    if torn is None:
        torn_text = b""
    events = _parse_clean(lines)
    if events is not None:
        tail = torn_text if torn is not None else (lines[-1] if lines else (before or b""))
        pretail = (lines[-1] if lines else before) if torn is not None else None
        return LedgerRead(path, tuple(events), torn, base + len(data), tail, pretail, first - 1 + len(lines))
    parsed, bad, repaired = [], [], set()
    loads, types = _loads, EVENT_TYPES
    for n, raw in enumerate(lines, start=first):
        try:
            event = loads(raw)
            if type(event) is not dict or "v" not in event or "id" not in event or "at" not in event:
                raise ValueError("not a ledger event")
            t = event.get("type")
            if t not in types:
                raise ValueError(f"unknown event type {t!r}" if isinstance(t, str) else "not a ledger event")
        except (ValueError, UnicodeDecodeError) as e:
            bad.append((n, "not valid JSON" if isinstance(e, (_DecodeError, json.JSONDecodeError)) else str(e)))
            continue
        if t == "repair":
            repaired.add(event.get("line"))
        parsed.append((n, event))
    for n, why in bad:
        if n not in repaired:
            raise _corrupt(path, n, why)
    events = []
    for n, event in parsed:
        if repaired and n in repaired:
            continue
        v = event["v"]
        if v != SCHEMA_VERSION:
            if type(v) is not int or v < 1:
                raise _corrupt(path, n, "no schema version")
            if v > SCHEMA_VERSION:
                raise FilesError(
                    f"{path}:{n}: written by a newer bonuscli (schema {v}); upgrade bonuscli to read it",
                    "ledger-newer",
                )
        events.append(event)
    tail = torn_text if torn is not None else (lines[-1] if lines else (before or b""))
    pretail = (lines[-1] if lines else before) if torn is not None else None
    return LedgerRead(path, tuple(events), torn, base + len(data), tail, pretail, first - 1 + len(lines))


def _parse_clean(lines):
    """The events of lines that are all well-formed current events with no repair among them (the
    common case, decoded in one pass), else None: then `parse` goes line by line to say which."""
    loads, types, sv = _loads, EVENT_TYPES, SCHEMA_VERSION
    try:
        events = [loads(raw) for raw in lines]
    except (ValueError, UnicodeDecodeError):
        return None
    for e in events:
        if type(e) is not dict or e.get("v") != sv or "id" not in e or "at" not in e:
            return None
        t = e.get("type")
        if t not in types or t == "repair":
            return None
    return events


def read_after(path: Path, offset: int, last_len: int, last_hash: str, first: int) -> Optional[LedgerRead]:
    """The events after byte `offset`, if the line ending there is still the one checkpointed.

    Returns None when the file no longer matches (shorter, or that line differs): read it whole.
    """
    try:
        with open(path, "rb") as f:
            start = offset - last_len - 1
            if start < 0:
                return None
            f.seek(start)
            data = f.read()
    except OSError:
        return None
    if len(data) < last_len + 1 or data[last_len:last_len + 1] != b"\n":
        return None
    before = data[:last_len]
    if line_hash(before) != last_hash:
        return None
    return parse(path, data[last_len + 1:], first, offset, before)


def read(path: Path) -> LedgerRead:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return LedgerRead(path, (), None, 0)
    except OSError as e:
        raise FilesError(f"cannot read ledger {path}: {e.strerror or e}", "ledger-unreadable")
    return parse(path, data)


def torn_warning(ledger: LedgerRead) -> Optional[str]:
    if ledger.torn is None:
        return None
    return (
        f"warning: {ledger.path}:{ledger.torn.line}: ignoring an unfinished last line "
        "(an interrupted write); the next change will seal it"
    )


def ensure_dir(path: Path) -> None:
    """Create a directory (and parents) 0700 whatever the umask."""
    if path.is_dir():
        return
    try:
        paths.make_private_dir(path)
    except OSError as e:
        raise FilesError(f"cannot create directory {path}: {e.strerror or e}", "disk")


class FileStore:
    """A data directory of ledgers."""

    def __init__(self, root: Path, lock_timeout: float = LOCK_TIMEOUT):
        self.root = root
        self.lock_timeout = lock_timeout

    def path(self, phone: str) -> Path:
        return paths.ledger_path(self.root, phone)

    def read(self, phone: str) -> LedgerRead:
        return read(self.path(phone))

    def read_after(self, phone: str, offset: int, last_len: int, last_hash: str, first: int):
        return read_after(self.path(phone), offset, last_len, last_hash, first)

    def exists(self) -> bool:
        return self.root.is_dir()

    def phones(self) -> list:
        d = paths.ledgers_dir(self.root)
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            return []
        return sorted(n[:-6] for n in names if n.endswith(".jsonl") and len(n) == 16 and n[:10].isdigit())

    def prepare(self) -> None:
        ensure_dir(self.root)
        ensure_dir(paths.ledgers_dir(self.root))
        ensure_dir(self.root / "locks")

    @contextmanager
    def locked(self, phones):
        """Hold exclusive locks on these members' ledgers, taken in sorted order."""
        import fcntl

        self.prepare()
        fds = []
        try:
            for phone in sorted(set(phones)):
                fd = os.open(paths.lock_path(self.root, phone), os.O_RDWR | os.O_CREAT, 0o600)
                fds.append(fd)
                if os.fstat(fd).st_mode & 0o777 != 0o600:
                    os.fchmod(fd, 0o600)
                deadline = time.monotonic() + self.lock_timeout
                delay = 0.002
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except OSError as e:
                        if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                            raise FilesError(f"cannot lock the ledger of {phone}: {e.strerror}", "lock")
                        if time.monotonic() >= deadline:
                            raise FilesError(
                                f"the ledger of {phone} is locked by another bonuscli; "
                                f"gave up after {self.lock_timeout:g} s, try again",
                                "lock-timeout",
                            )
                        time.sleep(delay)
                        delay = min(delay * 2, 0.05)
            yield
        finally:
            for fd in reversed(fds):
                os.close(fd)

    def append(self, phone: str, events, ledger: LedgerRead, fault=None) -> None:
        """Append events as whole lines (sealing a torn tail first), then fsync.

        The caller holds the lock and read `ledger` under it.
        """
        path = self.path(phone)
        data = chained(phone, events, ledger)
        new = not path.exists()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as e:
            raise FilesError(f"cannot open ledger {path} for writing: {e.strerror or e}", "disk")
        try:
            if new:
                os.fchmod(fd, 0o600)
            if fault:
                fault("before-write", phone)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if fault:
                fault("before-fsync", phone)
            os.fsync(fd)
        except OSError as e:
            raise FilesError(
                f"could not write ledger {path}: {e.strerror or e}; what was written is not acknowledged "
                "and a torn line will be sealed by the next command",
                "disk",
            )
        finally:
            os.close(fd)
        if new:
            try:
                dfd = os.open(path.parent, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
            except OSError:
                pass
        if fault:
            fault("after-fsync", phone)

    # -- snapshots: derived, plain JSON, rebuilt on any doubt
    def snapshot_path(self, phone: str) -> Path:
        paths.ledger_path(self.root, phone)
        return self.root / "cache" / "members" / f"{phone}.json"

    def load_snapshot(self, phone: str):
        """The saved document, or None. Any problem with the file is a miss; nothing is executed."""
        try:
            with open(self.snapshot_path(phone), "rb") as f:
                doc = _loads(f.read())
            return doc if isinstance(doc, dict) else None
        except (OSError, ValueError):
            return None

    def save_snapshot(self, phone: str, doc: dict) -> None:
        path = self.snapshot_path(phone)
        try:
            paths.make_private_dir(path.parent)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(_dumps(doc))
            os.replace(tmp, path)
        except (OSError, ValueError, TypeError):
            pass


Store = FileStore


class MemoryStore:
    """Ledgers as bytes in memory: the same lines, parser and chain as files, no locks, no fsync.
    Used to simulate (diff --ledgers, scenarios) through the one service path."""

    def __init__(self, files: dict | None = None):
        self.files: dict = {p: bytearray(b) for p, b in (files or {}).items()}
        self.snapshots: dict = {}
        self.root = Path("<memory>")

    def path(self, phone: str) -> Path:
        return Path("<memory>") / f"{phone}.jsonl"

    def read(self, phone: str) -> LedgerRead:
        data = self.files.get(phone)
        if data is None:
            return LedgerRead(self.path(phone), (), None, 0)
        return parse(self.path(phone), bytes(data))

    def read_after(self, phone, offset, last_len, last_hash, first):
        return None

    def exists(self) -> bool:
        return True

    def phones(self) -> list:
        return sorted(self.files)

    def prepare(self) -> None:
        pass

    @contextmanager
    def locked(self, phones):
        yield

    def append(self, phone: str, events, ledger: LedgerRead, fault=None) -> None:
        self.files.setdefault(phone, bytearray()).extend(chained(phone, events, ledger))

    def load_snapshot(self, phone):
        return None

    def save_snapshot(self, phone, doc):
        pass


def chained(phone: str, events, ledger: LedgerRead) -> bytes:
    """The bytes that append `events` to `ledger`: a torn tail sealed first, every line chained."""
    chunks = []
    prev = ledger.tail if ledger.size else None
    if ledger.torn is not None:
        chunks.append(b"\n")
        repair = {
            "v": SCHEMA_VERSION,
            "id": f"{phone}.r{ledger.torn.line}",
            "type": "repair",
            "at": events[0]["at"] if events else "",
            "line": ledger.torn.line,
            "offset": ledger.torn.offset,
            "note": "an interrupted write left this line unfinished; readers skip it",
            "torn_prev": line_hash(ledger.pretail) if ledger.pretail is not None else "",
        }
        prev = _link(chunks, repair, prev)
    for event in events:
        prev = _link(chunks, event, prev)
    return b"".join(chunks)


def _link(chunks: list, event: dict, prev_raw) -> bytes:
    """Encode an event chained to the line before it; returns its own bytes."""
    event = dict(event, prev=line_hash(prev_raw) if prev_raw is not None else "")
    raw = encode(event)
    chunks.append(raw)
    return raw[:-1]


def encode(event: dict) -> bytes:
    return (json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
