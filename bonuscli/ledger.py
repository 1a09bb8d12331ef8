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
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from bonuscli import paths
from bonuscli.model import EVENT_FIELDS, EVENT_TYPES, SCHEMA_VERSION, FilesError, Record

try:  # a fast decoder when installed (docs/performance.md: ~5x faster than json.loads a line)
    from orjson import JSONDecodeError as _DecodeError
    from orjson import loads as _loads
    _json_loads = None
except ImportError:  # pragma: no cover - orjson is a dependency; the stdlib gives the same values
    import json

    _loads = _json_loads = json.loads
    _DecodeError = json.JSONDecodeError

def _json():
    """The json module, imported only where it is needed (start-up: docs/performance.md)."""
    import json

    return json


LOCK_TIMEOUT = 10.0
REQUIRED = ("v", "id", "type", "at")
# A snapshot larger than this (bytes) is not one: a state is smaller than the lines it was replayed
# from (a 27.6 MB ledger of 100,000 events gives a 14.3 MB snapshot).
SNAPSHOT_RATIO = 2
SNAPSHOT_SLACK = 1 << 20


def _int64(text: str) -> int:
    """An integer of a snapshot read by the stdlib decoder: within 64 bits, as orjson reads them."""
    if len(text) > 20:
        raise ValueError("an integer beyond 64 bits")
    n = int(text)
    if not -(1 << 63) <= n < (1 << 64):
        raise ValueError("an integer beyond 64 bits")
    return n


def _loads_snapshot(data: bytes):
    """A snapshot's JSON, its integers within 64 bits: orjson reads a longer one as a float (which no
    snapshot holds where an integer belongs); the stdlib decoder is held to the same."""
    if _loads is not _json_loads:
        return _loads(data)
    return _json_loads(data, parse_int=_int64)  # pragma: no cover - orjson is a dependency


def _dumps(doc) -> bytes:
    """Plain data as compact JSON bytes (orjson when installed: a snapshot is megabytes)."""
    try:
        import orjson

        return orjson.dumps(doc)
    except ImportError:  # pragma: no cover
        import json

        return json.dumps(doc, separators=(",", ":")).encode()


def decode(raw: bytes):
    """One ledger line's JSON value (ValueError when it is not JSON)."""
    return _loads(raw)


class Torn(Record):
    line: int
    offset: int


class LedgerRead(Record):
    path: Path
    events: tuple  # dicts, oldest first, repair events included
    torn: Optional[Torn]
    size: int
    tail: bytes = b""  # the last line's bytes (the torn text when torn): what the next `prev` hashes
    pretail: Optional[bytes] = None  # when torn: the last complete line, which the repair links to
    lines: int = 0  # complete lines in the file
    exists: bool = True  # False: no such file (a new member's ledger is created with O_EXCL)
    unterminated: bool = False  # the last event is a complete, chained line that only lacks its newline


def _holds(kind: str, v) -> bool:
    if kind == "text":
        return type(v) is str
    if kind == "whole number":
        return type(v) is int
    if kind == "texts":
        return type(v) is list and all(type(x) is str for x in v)
    if kind == "lots":
        return type(v) is list and all(type(x) is dict and type(x.get("expires_on")) is str
                                       and type(x.get("points")) is int for x in v)
    if kind == "bonuses":
        return type(v) is list and all(type(x) is dict and type(x.get("reason")) is str
                                       and type(x.get("points")) is int for x in v)
    return True


def malformed(event: dict) -> Optional[str]:
    """What is wrong with an event's fields (model.EVENT_FIELDS: each field its type's events always
    have, holding what they always hold), or None. A line edited and re-chained outside bonuscli."""
    t = event["type"]
    a = "an" if t[0] in "aeiou" else "a"
    if type(event.get("id")) is not str or type(event.get("at")) is not str:
        return f"{a} {t} event whose id or at is not a text"
    for field, kind in EVENT_FIELDS.get(t, {}).items():
        if field not in event:
            return f"{a} {t} event without {field}"
        if not _holds(kind, event[field]):
            what = {"texts": "list of texts", "lots": "list of lots", "bonuses": "list of bonuses"}.get(kind, kind)
            return f"{a} {t} event whose {field} is not a {what}"
    return None


def first_malformed(path: Path, events) -> Optional[tuple]:
    """(line, message) of the first malformed event (`malformed`), or None."""
    for e in events:
        why = malformed(e)
        if why:
            return line_of(path, e.get("id")), why
    return None


def line_of(path: Path, event_id) -> int:
    """1-based line number of an event in a ledger file (by id; 1 when it is not found)."""
    try:
        with open(path, "rb") as f:
            for n, raw in enumerate(f, start=1):
                if f'"id":"{event_id}"'.encode() in raw:
                    return n
    except OSError:
        pass
    return 1


def line_hash(raw: bytes) -> str:
    """The hash chain's link: 128 bits of SHA-256 over a line's bytes (without its newline)."""
    import hashlib

    return hashlib.sha256(raw).hexdigest()[:32]


def genesis(phone: str) -> str:
    """The `prev` of a ledger's first line: binds the file to its phone (a ledger copied under
    another phone's name does not verify)."""
    return line_hash(f"bonuscli ledger {phone}".encode())


def _chain_holds(lines: list, events, phone: str, before: bytes | None) -> bool:
    """True when every line is a current (schema 2) event of this phone, none a repair, each linked
    to the line before it (the first to `before`, or to the phone): `verify_chain` would find nothing.
    False on any doubt (then it finds what is wrong, line by line)."""
    import hashlib

    sha = hashlib.sha256
    prefix = phone + "."
    sv = SCHEMA_VERSION
    if before is None:
        want = genesis(phone)
        first = events[0] if events else None
        if first is not None and first.get("prev") == "":  # the release 0.1.0 first line: still read
            want = ""
    else:
        want = sha(before).hexdigest()[:32]
    for raw, e in zip(lines, events):
        eid = e.get("id")
        if (e.get("prev") != want or e.get("v") != sv or e.get("type") == "repair" or type(eid) is not str
                or not eid.startswith(prefix)):
            return False
        want = sha(raw).hexdigest()[:32]
    return True


def verify_chain(path: Path, data: bytes, phone: str | None = None, first: int = 1, before: bytes | None = None,
                 base: int = 0, events=None) -> list:
    """(line, message) for every line that breaks the chain (docs/ledger.md, "Tamper evidence").

    `data` is a whole file, or the part after a verified line (`before`, ending at byte `base`,
    line `first` - 1). Every line of schema 2 links to the bytes of the line before it, the first
    to the phone (`genesis`; an empty link is the release 0.1.0 first line, still read); once a
    line is chained, every later line must be; every event id names the file's phone; a `repair`
    names exactly the line before it, which must be the last line before it (an append cut short),
    at its byte offset. A torn last line is not a problem here.
    """
    out = []
    lines = data.split(b"\n")
    lines.pop()  # the part after the last newline: empty, or a torn last line
    if events is not None and phone is not None and len(events) == len(lines):
        if _chain_holds(lines, events, phone, before):
            return out  # the common case, checked on the events already decoded
    prev_raw = before
    chained = before is not None
    offset = base
    start_of = {}
    decoded = []
    for raw in lines:
        try:
            decoded.append(_loads(raw))
        except ValueError:
            decoded.append(None)
    for n, raw in enumerate(lines, start=first):
        start_of[n] = offset
        offset += len(raw) + 1
        event = decoded[n - first]
        nxt = decoded[n - first + 1] if n - first + 1 < len(decoded) else None
        sealed = isinstance(nxt, dict) and nxt.get("type") == "repair" and nxt.get("line") == n
        if not isinstance(event, dict) or sealed:
            prev_raw = raw  # unreadable, or an append cut short that the next line seals: readers skip it
            continue
        v = event.get("v")
        if isinstance(v, int) and v >= 2:
            if prev_raw is not None:
                want = (line_hash(prev_raw),)
            elif phone is not None:
                want = (genesis(phone), "")
            else:
                want = (event.get("prev"),)
            if event.get("prev") not in want:
                what = f"line {n - 1}" if prev_raw is not None else "its phone (the first line)"
                out.append((n, f"hash chain broken: this line does not follow {what} as written "
                               "(a line above was edited, deleted, inserted or reordered)"))
            chained = True
        elif chained:
            out.append((n, "hash chain broken: an unchained line after chained ones (a line was rewritten with an "
                           "older schema)"))
        eid = event.get("id")
        if phone is not None and not (isinstance(eid, str) and eid.startswith(phone + ".")):
            out.append((n, f"event id {eid!r} does not belong to {phone}'s ledger (a ledger copied or renamed?)"))
        if event.get("type") == "repair":
            named = event.get("line")
            if named != n - 1 or n - 1 < first:
                out.append((n, f"a repair must name the line right before it (line {n - 1}), not {named!r}: "
                               "it may only seal an append cut short"))
            elif _chained_event(decoded[n - 1 - first],
                                lines[n - 2 - first] if n - 2 >= first else before, phone):
                out.append((n, f"a repair names line {n - 1}, a complete chained event: only an append cut short "
                               "may be sealed (a forged repair would hide that line)"))
            else:
                if event.get("offset") != start_of[n - 1]:
                    out.append((n, f"a repair names line {named} at the wrong byte offset"))
                if n - 2 >= first:
                    pretail = lines[n - 2 - first]
                elif n - 2 == first - 1:
                    pretail = before
                else:
                    pretail = None
                want_torn = line_hash(pretail) if pretail is not None else ""
                if event.get("torn_prev") != want_torn:
                    out.append((n, "hash chain broken: the line before the sealed one was edited, deleted or "
                                   "reordered"))
        prev_raw = raw
    return out


def _chained_event(event, prev_raw: Optional[bytes], phone: Optional[str]) -> bool:
    """A complete, current (schema 2) event of this phone whose `prev` links to the line before it
    (`prev_raw`; None: it is the file's first line, linked to the phone): never an append cut short,
    so never a line a `repair` may seal."""
    if not isinstance(event, dict) or type(event.get("v")) is not int or event["v"] < 2:
        return False
    if event.get("type") not in EVENT_TYPES or event.get("type") == "repair":
        return False
    eid = event.get("id")
    if phone is not None and not (isinstance(eid, str) and eid.startswith(phone + ".")):
        return False
    if prev_raw is not None:
        return event.get("prev") == line_hash(prev_raw)
    return phone is not None and event.get("prev") == genesis(phone)


def completed(led: LedgerRead, phone: str) -> LedgerRead:
    """`led` as a change sees it: a final line that only lacks its newline, and is a complete, valid,
    chained event, is kept (the change appends the newline first: `chained`), never sealed."""
    if led.torn is None:
        return led
    try:
        event = _loads(led.tail)
    except ValueError:
        return led
    if not _chained_event(event, led.pretail, phone) or "at" not in event:
        return led
    return led._replace(events=tuple(led.events) + (event,), torn=None, lines=led.lines + 1, unterminated=True)


def tampered(path: Path, problems: list) -> FilesError:
    line, message = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return FilesError(f"{path}:{line}: {message}{more}; the ledger was changed outside bonuscli, so nothing was "
                      "written to it. Restore it from a backup; `bonuscli check --ledgers` lists every problem",
                      "ledger-tampered")


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
            bad.append((n, "not valid JSON" if isinstance(e, (_DecodeError, _json().JSONDecodeError)) else str(e)))
            continue
        if t == "repair" and type(event.get("line")) is int:
            repaired.add(event["line"])
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


def _open_error(path: Path, e: OSError, fix: str, what: str, kind: str) -> FilesError:
    """The error for a file of the data directory that could not be opened (a symbolic link: refused)."""
    if e.errno == errno.ELOOP:
        return FilesError(f"{path} is a symbolic link; bonuscli opens nothing in its data directory through one "
                          f"({fix})", "unsafe-file")
    return FilesError(f"cannot open {what} {path}: {e.strerror or e}", kind)


def writable_by_others(path) -> FilesError:
    """A ledger that users other than its owner may write: refused before it is read, as a directory
    others may write is (`FileStore.check_dirs`); bonuscli creates every ledger 0600."""
    return FilesError(f"{path} can be written by users other than its owner, who could change the points in it; "
                      f"bonuscli neither reads nor writes it until you fix that with `chmod go-w {path}` "
                      "(bonuscli creates ledgers 0600)", "ledger-permissions")


def _read_bytes(path: Path, start: int = 0, ledger: bool = False) -> bytes:
    """A file's bytes from byte `start` on, never through a symbolic link (FileNotFoundError when there
    is none). A `ledger` that users other than its owner may write is refused (`writable_by_others`)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _open_error(path, e, "replace it with the real file", "file", "unsafe-file")
        raise
    try:
        st = os.fstat(fd)
        if ledger and st.st_mode & 0o022:
            raise writable_by_others(path)
        size = st.st_size - start
        if start:
            os.lseek(fd, start, os.SEEK_SET)
        chunks = [os.read(fd, max(size, 0) + 1 if size < (1 << 30) else 1 << 30)]
        while chunks[-1]:  # read to the end, however the file grew meanwhile
            chunks.append(os.read(fd, 1 << 20))
    finally:
        os.close(fd)
    return chunks[0] if len(chunks) == 2 else b"".join(chunks)


def read_after(path: Path, offset: int, last_len: int, last_hash: str, first: int,
               phone: str | None = None) -> Optional[LedgerRead]:
    """The events after byte `offset`, if the line ending there is still the one a snapshot saw.

    Returns None when the file no longer matches (shorter, or that line differs): read it whole.
    With `phone`, the lines after it are verified (the chain continues from that line)."""
    start = offset - last_len - 1
    if start < 0:
        return None
    try:
        data = _read_bytes(path, start, ledger=True)  # only from the line the snapshot ends on
    except (OSError, OverflowError):  # gone, or an offset no file has: read it whole
        return None
    end = offset - start  # where that line's newline ends, in `data`
    if len(data) < end or data[end - 1:end] != b"\n":
        return None
    before = data[:end - 1]
    if line_hash(before) != last_hash:
        return None
    rest = data[end:]
    led = parse(path, rest, first, offset, before)
    if phone is not None:
        problems = verify_chain(path, rest, phone, first, before, offset, led.events)
        if problems:
            raise tampered(path, problems)
        _well_formed(path, led.events)
        led = completed(led, phone)
    return led


def _well_formed(path: Path, events) -> None:
    """A verified read's events each hold the fields of their type (`malformed`), else corruption."""
    bad = first_malformed(path, events)
    if bad:
        raise _corrupt(path, *bad)


def read(path: Path, phone: str | None = None) -> LedgerRead:
    """A whole ledger; with `phone`, its chain verified first (FilesError `ledger-tampered`). A ledger
    others may write is refused (FilesError `ledger-permissions`)."""
    try:
        data = _read_bytes(path, ledger=True)
    except FileNotFoundError:
        return LedgerRead(path, (), None, 0, exists=False)
    except OSError as e:
        raise FilesError(f"cannot read ledger {path}: {e.strerror or e}", "ledger-unreadable")
    led = parse(path, data)  # an unreadable line is named as corruption first
    if phone is not None:
        problems = verify_chain(path, data, phone, events=led.events)
        if problems:
            raise tampered(path, problems)
        _well_formed(path, led.events)
        led = completed(led, phone)  # a change keeps a whole last event that only lacks its newline
    return led


def read_checked(path: Path, phone: str) -> tuple:
    """(the whole ledger, every (line, message) of its chain's problems), from one read of the file
    (`check --ledgers`). Raises FilesError as `read` does for a file that cannot be read or parsed, or
    that others may write."""
    try:
        data = _read_bytes(path, ledger=True)
    except FileNotFoundError:
        return LedgerRead(path, (), None, 0, exists=False), []
    except OSError as e:
        raise FilesError(f"cannot read ledger {path}: {e.strerror or e}", "ledger-unreadable")
    led = parse(path, data)
    problems = verify_chain(path, data, phone, events=led.events)
    bad = first_malformed(path, led.events)
    if bad:
        problems = sorted(problems + [(bad[0], f"corrupt ledger line ({bad[1]})")])
    return led, problems


def torn_fate(ledger: LedgerRead) -> str:
    """What the next change does to an unfinished last line: a complete, valid, chained event that only
    lacks its newline is completed and kept (`completed`); anything else is sealed by a `repair`."""
    kept = completed(ledger, Path(ledger.path).stem).unterminated
    return "the next change to this member completes and keeps it" if kept else \
        "the next change to this member seals it"


def torn_warning(ledger: LedgerRead) -> Optional[str]:
    if ledger.torn is None:
        return None
    return (
        f"warning: {ledger.path}:{ledger.torn.line}: ignoring an unfinished last line "
        f"(an interrupted write); {torn_fate(ledger)}"
    )


def ensure_dir(path: Path) -> None:
    """Create a directory (and parents) 0700 whatever the umask. A derived directory (locks/,
    cache/) may be deleted at any moment, even while it is being made: then make it again."""
    for attempt in range(50):
        if path.is_dir():
            return
        try:
            paths.make_private_dir(path)
            return
        except FileNotFoundError:
            continue  # removed between its mkdir and its chmod: again
        except OSError as e:
            raise FilesError(f"cannot create directory {path}: {e.strerror or e}", "disk")
    raise FilesError(f"cannot create directory {path}: it keeps disappearing", "disk")


class Conflict(FilesError):
    """Another process created the same new ledger between our read and our write: read again."""


def _write_all(fd: int, data: bytes, phone: str, fault=None) -> None:
    """Write every byte, then fsync (the crash tests' fault points around both)."""
    if fault:
        fault("before-write", phone)
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    if fault:
        fault("before-fsync", phone)
    os.fsync(fd)


def _open_append(path: Path) -> int:
    """A ledger opened to append to, never through a symbolic link."""
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise FilesError(f"{path} is a symbolic link; nothing was written", "unsafe-file")
        raise FilesError(f"cannot open ledger {path} for writing: {e.strerror or e}", "disk")


def _fsync_dir(path: Path) -> None:
    try:
        dfd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


class FileStore:
    """A data directory of ledgers."""

    def __init__(self, root: Path, lock_timeout: float = LOCK_TIMEOUT):
        self.root = root
        self.lock_timeout = lock_timeout
        self._held: list | None = None  # the fds of the `locked` block in progress
        self._prepared = False
        self._paths: dict = {}
        self._ledgers: Path | None = None

    def path(self, phone: str) -> Path:
        p = self._paths.get(phone)
        if p is None:
            if len(self._paths) > 65536:
                self._paths.clear()
            if not (len(phone) == 10 and phone.isdigit()):  # defence in depth: never a path from input
                raise ValueError(f"not a normalised phone: {phone!r}")
            if self._ledgers is None:
                self._ledgers = paths.ledgers_dir(self.root)
            p = self._paths[phone] = self._ledgers / f"{phone}.jsonl"
        return p

    def read(self, phone: str, verify: bool = False) -> LedgerRead:
        return read(self.path(phone), phone if verify else None)

    def read_after(self, phone: str, offset: int, last_len: int, last_hash: str, first: int, verify: bool = False):
        return read_after(self.path(phone), offset, last_len, last_hash, first, phone if verify else None)

    def read_checked(self, phone: str) -> tuple:
        return read_checked(self.path(phone), phone)

    def read_prefix(self, phone: str, offset: int, last_len: int, last_hash: str) -> Optional[LedgerRead]:
        """The lines before byte `offset` (a snapshot's), if the line ending there is still the one it
        saw (else None)."""
        try:
            data = _read_bytes(self.path(phone), ledger=True)
        except (OSError, FilesError):
            return None
        start = offset - last_len - 1
        if start < 0 or len(data) < offset or data[offset - 1:offset] != b"\n" \
                or line_hash(data[start:offset - 1]) != last_hash:
            return None
        return parse(self.path(phone), data[:offset])

    @staticmethod
    def plain(doc):
        """`doc` as a snapshot file holds it (written and read back)."""
        return _loads_snapshot(_dumps(doc))

    def exists(self) -> bool:
        if not self.root.is_dir():
            return False
        self.check_dirs()
        return True

    def check_dirs(self) -> None:
        """Refuse a data directory, or a directory in it, that other users may write (as ssh refuses
        a writable ~/.ssh), and directories inside it that are symbolic links."""
        import stat

        subdirs = (paths.ledgers_dir(self.root), self.root / "locks", paths.cache_dir(self.root),
                   paths.cache_dir(self.root) / "members")
        for d in (self.root,) + subdirs:
            try:
                st = os.stat(d) if d == self.root else os.lstat(d)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if stat.S_ISLNK(st.st_mode):
                raise FilesError(f"{d} is a symbolic link; bonuscli opens nothing in its data directory through one "
                                 "(make it a real directory)", "unsafe-file")
            if not stat.S_ISDIR(st.st_mode):
                continue
            if st.st_mode & 0o022:
                raise FilesError(f"{d} can be written by users other than its owner, who could plant or change files "
                                 f"in it; fix it with `chmod go-w {d}`", "unsafe-permissions")

    def phones(self) -> list:
        d = paths.ledgers_dir(self.root)
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            return []
        return sorted(n[:-6] for n in names if n.endswith(".jsonl") and len(n) == 16 and n[:10].isdigit())

    def prepare(self) -> None:
        """The data directory and its ledgers/, made and checked once per store. (No `locks/`: a member
        is locked by an flock on its ledger, and a new ledger's creation is atomic; a `locks/` left by an
        older bonuscli is still checked, and may be deleted.)"""
        if self._prepared:
            return
        ensure_dir(self.root)
        self.check_dirs()
        ensure_dir(paths.ledgers_dir(self.root))
        self._prepared = True

    @contextmanager
    def locked(self, phones, commit: "Commit | None" = None):
        """Hold exclusive locks on these members' ledgers, taken in sorted phone order.

        The lock is an flock on the ledger file itself: the ledger is data and is never deleted, so no
        deleted or replaced lock file can let a second writer in. A ledger that does not exist yet needs
        no lock: it is created whole and atomically (`append`: a temporary file, flocked before it is
        linked into place, so the new ledger is locked from the moment it appears), and `link` lets one
        creator win; the others get `Conflict`, and read again (the new ledger, locked, now exists) and
        decide again. (Creating a file costs more than anything else a new member needs: a lock file
        for it as well halved `join --from`.) With `commit`, the locks are handed to it when the block
        ends and released only once the commit has made every append of it durable (`Commit.sync`)."""
        self.prepare()
        fds = []
        deadline = time.monotonic() + self.lock_timeout
        outer, self._held = self._held, fds  # a ledger created in this block keeps its flock in `fds`
        try:
            for phone in sorted(set(phones)):
                ledger = self.path(phone)
                fd = self._open_ledger(ledger)
                if fd is None:  # no ledger yet: its creation is atomic (`_create`), nothing to lock
                    continue
                fds.append(fd)
                self._flock(fd, phone, deadline)
            yield
        finally:
            self._held = outer
            if commit is not None:
                commit.hold(fds)
            else:
                for fd in reversed(fds):
                    os.close(fd)

    @staticmethod
    def _open_ledger(ledger: Path):
        try:
            return os.open(ledger, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return None
        except OSError as e:
            raise _open_error(ledger, e, "replace it with the real file", "ledger", "ledger-unreadable")

    def _flock(self, fd: int, phone: str, deadline: float) -> None:
        import fcntl

        delay = 0.002
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
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

    def append(self, phone: str, events, ledger: LedgerRead, fault=None, commit: "Commit | None" = None) -> None:
        """Append events as whole lines (sealing a torn tail first), then fsync.

        The caller holds the lock and read `ledger` under it. A new ledger is written to a temporary
        file and linked into place, so it appears whole or not at all; if another process created it
        meanwhile, `Conflict` (the caller reads again and decides again). With `commit` (a batch), the
        bytes are written now and made durable by `commit.sync()`, together with the other members'
        appends of the same commit, before anything of them is reported."""
        path = self.path(phone)
        data = chained(phone, events, ledger)
        if not ledger.exists:
            return self._create(path, phone, data, fault, commit)
        if commit is not None:
            return commit.write(path, phone, data, fault)
        fd = _open_append(path)
        size = None
        try:
            size = os.fstat(fd).st_size
            _write_all(fd, data, phone, fault)
        except OSError as e:
            # not acknowledged: take back what was written (we hold the lock; these bytes are ours)
            undone = size is not None and _undo(fd, size)
            raise FilesError(
                f"could not write ledger {path}: {e.strerror or e}; nothing was recorded"
                if undone else f"could not write ledger {path}: {e.strerror or e}; what was written is not "
                "acknowledged and a torn line will be sealed by the next command",
                "disk",
            )
        finally:
            os.close(fd)
        if fault:
            fault("after-fsync", phone)

    def _create(self, path: Path, phone: str, data: bytes, fault=None, commit: "Commit | None" = None) -> None:
        """A new ledger, whole or not at all (written under a temporary name, then linked). With
        `commit` (a batch) its bytes and its name are made durable by `commit.sync()`, with the other
        members' writes (one syncfs for thousands of new members), instead of two fsyncs each."""
        import fcntl

        tmp = path.with_name(f".{phone}.{os.getpid()}.{time.monotonic_ns()}.new")
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                         0o600)
        except OSError as e:
            raise FilesError(f"cannot create ledger {path}: {e.strerror or e}", "disk")
        keep = False
        try:
            try:
                os.fchmod(fd, 0o600)
                # locked before it has a name: from the moment the ledger appears, it is ours until
                # the `locked` block ends (nobody else can hold a lock on a file only we can see)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if commit is None:
                    _write_all(fd, data, phone, fault)
                else:  # durable at `commit.sync()`
                    if fault:
                        fault("before-write", phone)
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                try:
                    os.link(tmp, path)  # atomic: fails if the ledger exists
                except FileExistsError:
                    raise Conflict(f"the ledger of {phone} was created by another bonuscli meanwhile", "conflict")
                keep = self._held is not None
                if keep:
                    self._held.append(fd)
                if commit is not None:
                    commit.created(path, phone, os.dup(fd))
            finally:
                if not keep:
                    os.close(fd)
            if commit is None:
                _fsync_dir(path.parent)
        except OSError as e:
            raise FilesError(f"could not write ledger {path}: {e.strerror or e}; nothing was acknowledged", "disk")
        finally:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if fault and commit is None:
            fault("after-fsync", phone)

    def commit(self, fault=None) -> "Commit":
        return Commit(fault)

    # -- snapshots: derived, plain JSON, rebuilt on any doubt
    def snapshot_path(self, phone: str) -> Path:
        return self.path(phone).parent.parent / "cache" / "members" / f"{phone}.json"

    def load_snapshot(self, phone: str):
        """The saved document, or None. Any problem with the file is a miss, never an error: unreadable,
        not JSON, nested too deeply, an integer beyond 64 bits, or larger than its ledger could explain
        (a state holds less than the lines it was replayed from). Nothing is executed. What the values
        are worth is for `Service._resume` to check."""
        ledger = self.path(phone)  # a normalised phone, or ValueError
        try:
            fd = os.open(f"{self.root}/cache/members/{phone}.json",
                         os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return None
        try:
            limit = SNAPSHOT_SLACK + SNAPSHOT_RATIO * os.stat(ledger).st_size
            if os.fstat(fd).st_size > limit:
                return None
            chunks, size = [], 0
            while True:  # read to the end, but never past the limit however the file grows meanwhile
                chunk = os.read(fd, min(1 << 24, limit + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    return None
            doc = _loads_snapshot(b"".join(chunks))
            return doc if isinstance(doc, dict) else None
        except (OSError, ValueError, FilesError, RecursionError, MemoryError):
            return None
        finally:
            os.close(fd)

    def save_snapshot(self, phone: str, doc: dict) -> None:
        path = self.snapshot_path(phone)
        try:
            paths.make_private_dir(path.parent)
            tmp = path.with_suffix(f".{os.getpid()}.{time.monotonic_ns()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(_dumps(doc))
            os.replace(tmp, path)
        except (OSError, ValueError, TypeError):
            pass


def _syncfs():
    """`syncfs(2)` when this system has it and reports write-back errors through it (Linux 5.8 and
    later), else None (then each file is fsynced)."""
    import platform
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        major, minor = (int(x) for x in platform.release().split(".")[:2])
    except ValueError:
        return None
    if (major, minor) < (5, 8):
        return None
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    return fn


class Commit:
    """Many members' appends made durable together (a batch): each append's bytes are written at
    once, under the member's lock; `sync()` then makes them all durable with one `syncfs` (or an
    fsync of each file where that is not available), and only then releases the locks. A member
    whose bytes could not be made durable is taken back to where it was, as a failed single append
    is, and named in what `sync()` returns. Its fault points are those of `_write_all`."""

    def __init__(self, fault=None):
        self.fault = fault
        self.writes: list = []  # (phone, path, fd, size before)
        self.locks: list = []
        self.failed: dict = {}  # phone -> FilesError

    def write(self, path: Path, phone: str, data: bytes, fault=None) -> None:
        fd = _open_append(path)
        size = None
        try:
            size = os.fstat(fd).st_size
            if fault:
                fault("before-write", phone)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except OSError as e:
            undone = size is not None and _undo(fd, size)
            os.close(fd)
            raise FilesError(
                f"could not write ledger {path}: {e.strerror or e}; nothing was recorded"
                if undone else f"could not write ledger {path}: {e.strerror or e}; what was written is not "
                "acknowledged and a torn line will be sealed by the next command", "disk")
        self.writes.append((phone, path, fd, size))

    def created(self, path: Path, phone: str, fd: int) -> None:
        """A new ledger linked into place, its bytes and its directory entry made durable with the rest
        (taken back by unlinking it when they cannot be)."""
        self.writes.append((phone, path, fd, -1))

    def hold(self, fds) -> None:
        self.locks.extend(fds)

    def sync(self) -> dict:
        """Make every write durable, then release every lock; phone -> FilesError for the members
        whose writes are not (taken back when possible)."""
        try:
            bad = self._sync()
            firsts = {}
            for phone, path, fd, size in self.writes:
                firsts.setdefault(phone, (path, fd, size))
            for phone, e in bad.items():
                path, fd, size = firsts[phone]
                undone = _unlink_new(path) if size == -1 else _undo(fd, size)
                self.failed[phone] = FilesError(
                    f"could not write ledger {path}: {e.strerror or e}; nothing was recorded" if undone else
                    f"could not write ledger {path}: {e.strerror or e}; what was written is not acknowledged",
                    "disk")
            if self.fault:
                for phone in dict.fromkeys(p for p, *_ in self.writes):
                    if phone not in bad:
                        try:
                            self.fault("after-fsync", phone)
                        except OSError as e:  # durable, yet an error: the caller reads what is there
                            self.failed[phone] = FilesError(f"ledger {firsts[phone][0]}: {e.strerror or e}", "disk")
        finally:
            for _p, _path, fd, _s in self.writes:
                os.close(fd)
            for fd in reversed(self.locks):
                os.close(fd)
            self.writes, self.locks = [], []
        return self.failed

    def _sync(self) -> dict:
        bad: dict = {}
        if not self.writes:
            return bad
        pending = []
        for phone, path, fd, size in self.writes:
            if self.fault:
                try:
                    self.fault("before-fsync", phone)
                except OSError as e:
                    bad.setdefault(phone, e)
                    continue
            pending.append((phone, fd))
        syncfs = _get_syncfs()
        if syncfs is not None and pending and syncfs(pending[0][1]) == 0:
            return bad  # every dirty page of this file system, ours included, is on disk
        for phone, fd in pending:  # no syncfs, or it reported an error: find whose writes failed
            try:
                os.fsync(fd)
            except OSError as e:
                bad.setdefault(phone, e)
        for parent in dict.fromkeys(path.parent for phone, path, _fd, size in self.writes
                                    if size == -1 and phone not in bad):
            try:
                _fsync_dir(parent)  # the new ledgers' names
            except OSError as e:
                for phone, path, _fd, size in self.writes:
                    if size == -1 and path.parent == parent:
                        bad.setdefault(phone, e)
        return bad


_SYNCFS = None  # syncfs, or False where there is none (tests set False to take the fsync path)


def _get_syncfs():
    global _SYNCFS
    if _SYNCFS is None:
        _SYNCFS = _syncfs() or False
    return _SYNCFS or None


def _unlink_new(path: Path) -> bool:
    """Take back a new ledger whose bytes could not be made durable (its lock is held: it is ours)."""
    try:
        os.unlink(path)
        _fsync_dir(path.parent)
        return True
    except OSError:
        return False


def _undo(fd: int, size: int) -> bool:
    """Take a failed append back (the lock is held: these bytes are ours)."""
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
        return True
    except OSError:
        return False


class NoCommit:
    """The commit of a store that needs none (in memory, a dry run)."""

    failed: dict = {}

    def hold(self, fds) -> None:
        pass

    def sync(self) -> dict:
        return {}


Store = FileStore


class _Unlocked:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_UNLOCKED = _Unlocked()


class _InMemory:
    """What the stores in memory share: one process, nothing to lock, make durable, prepare or
    cache; each ledger's read kept (`reads`) and brought up to date by `append`."""

    root = Path("<memory>")

    def __init__(self):
        self.reads: dict = {}  # phone -> LedgerRead of the ledger as it is now
        self._paths: dict = {}

    def path(self, phone: str) -> Path:
        path = self._paths.get(phone)
        if path is None:
            path = self._paths[phone] = self.root / f"{phone}.jsonl"
        return path

    def read(self, phone: str, verify: bool = False) -> LedgerRead:
        led = self.reads.get(phone)
        if led is None:
            return LedgerRead(self.path(phone), (), None, 0, exists=False)
        return led

    def read_after(self, phone, offset, last_len, last_hash, first, verify=False):
        return None

    def exists(self) -> bool:
        return True

    def phones(self) -> list:
        return sorted(self.reads)

    def prepare(self) -> None:
        pass

    def locked(self, phones, commit=None):
        return _UNLOCKED

    def commit(self, fault=None) -> "NoCommit":
        return NoCommit()

    def load_snapshot(self, phone):
        return None

    def save_snapshot(self, phone, doc):
        pass


class MemoryStore(_InMemory):
    """Ledgers as bytes in memory: the same lines, parser and chain as files, no locks, no fsync.
    Used to run scenarios (and diff's reference world) through the one service path. Each ledger's
    lines are decoded once, when appended, and kept with the bytes."""

    def __init__(self, files: dict | None = None):
        super().__init__()
        self.files: dict = {}
        for p, b in (files or {}).items():
            self.files[p] = bytearray(b)
            self.reads[p] = parse(self.path(p), bytes(b))

    def read_checked(self, phone: str) -> tuple:
        led = self.read(phone)
        data = bytes(self.files.get(phone, b""))
        return led, verify_chain(led.path, data, phone, events=led.events)

    def append(self, phone: str, events, ledger: LedgerRead, fault=None, commit=None) -> None:
        data = chained(phone, events, ledger)
        buf = self.files.setdefault(phone, bytearray())
        old = self.reads.get(phone)
        buf.extend(data)
        if old is None or old.torn is not None:
            self.reads[phone] = parse(self.path(phone), bytes(buf))
            return
        new = parse(self.path(phone), data, old.lines + 1, old.size, old.tail)
        self.reads[phone] = LedgerRead(old.path, old.events + new.events, new.torn, new.size, new.tail, new.pretail,
                                       new.lines)


class SimStore(_InMemory):
    """Ledgers as the stamped event dicts the service appends, for a simulation (`diff --ledgers`):
    the same Service, decisions and stamping as every command, with no bytes, no hash chain and no
    decoding (nothing of a simulation is ever written or read back from bytes)."""

    root = Path("<simulation>")

    def append(self, phone: str, events, ledger: LedgerRead, fault=None, commit=None) -> None:
        led = self.reads.get(phone)
        if led is None:  # one read per ledger, its events the list appended to (no bytes: size 0)
            led = self.reads[phone] = LedgerRead(self.path(phone), [], None, 0)
        led.events.extend(events)


def chained(phone: str, events, ledger: LedgerRead) -> bytes:
    """The bytes that append `events` to `ledger`: a torn tail sealed first, every line chained."""
    chunks = []
    prev = ledger.tail if ledger.size else genesis(phone)
    if ledger.unterminated:
        chunks.append(b"\n")  # the last event, complete and chained, only lacked its newline: kept
    elif ledger.torn is not None:
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


def _link(chunks: list, event: dict, prev) -> bytes:
    """Encode an event chained to the line before it (its bytes; or, for a first line, the
    genesis hash as text); returns its own bytes."""
    event = dict(event, prev=line_hash(prev) if isinstance(prev, bytes) else prev)
    raw = encode(event)
    chunks.append(raw)
    return raw[:-1]


def encode(event: dict) -> bytes:
    """An event as one ledger line: compact JSON, UTF-8, keys in order (orjson writes the same bytes
    as json.dumps(ensure_ascii=False, separators=(",", ":")) for ledger events; tests check it)."""
    try:
        return _orjson_dumps(event) + b"\n"
    except (TypeError, ValueError):  # e.g. an integer beyond 64 bits: the stdlib writes it
        return (_json().dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


try:
    from orjson import dumps as _orjson_dumps
except ImportError:  # pragma: no cover
    def _orjson_dumps(event):
        raise TypeError("orjson is not installed")
