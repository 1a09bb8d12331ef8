"""Where things live: the data directory, ledgers, locks, caches.

Owns: turning values that cli passes in into paths. Only normalised phones
(10 digits) ever become file names. platformdirs is imported lazily.
"""

from __future__ import annotations

from pathlib import Path

APP = "bonuscli"


def data_dir(given: str | None) -> Path:
    if given:
        return Path(given).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir(APP))


def ledgers_dir(root: Path) -> Path:
    return root / "ledgers"


def ledger_path(root: Path, phone: str) -> Path:
    if not (len(phone) == 10 and phone.isdigit()):  # defence in depth: never a path from input
        raise ValueError(f"not a normalised phone: {phone!r}")
    return root / "ledgers" / f"{phone}.jsonl"


def lock_path(root: Path, phone: str) -> Path:
    ledger_path(root, phone)
    return root / "locks" / f"{phone}.lock"


def cache_dir(root: Path) -> Path:
    return root / "cache"
