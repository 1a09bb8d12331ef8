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


def cache_dir(root: Path) -> Path:
    return root / "cache"


def make_private_dir(path: Path) -> None:
    """Create `path` and any missing parents, each 0700 whatever the umask."""
    import os

    missing = []
    p = Path(path)
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            continue
        os.chmod(d, 0o700)
