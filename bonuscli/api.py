"""The Python API (CLI.md §5): the same engine and the same documents as the command line, called.

    import bonuscli

    program = bonuscli.open(data_dir="data")          # the CLI's defaults when not given
    program.join("9161234567", region="RU-MOW", at="2025-03-01T10:00")
    program.earn("9161234567", "500.00", category="mobile", ref="tx-1", at="2025-03-02")
    program.balance("9161234567", at="2025-03-03")   # the dict `balance --json` prints
    bonuscli.calc("500", category="mobile", tenure_months=13)   # no data directory

`Program` has one method per command a scenario step can run (`scenario.COMMANDS`: the writing
commands as the registry declares them, `commands.COMMANDS`, and the reading ones), made from
those declarations: the command's arguments positionally, its options and flags as keyword
arguments (`-` as `_`), `at=` on every call (ISO text or an aware datetime; default: the clock).
Each runs exactly what the command runs (`scenario.execute`: the request layer, `Service.run`)
and returns the document `--json` prints, as plain dicts and lists. Refusals and errors raise
`Refused` (exit 1), `BadInput` (2) and `FilesError` (3), each with `.kind`, `.exit_code` and
`.message`.

It never imports Click, never prints, never exits and never reads the environment (the CLI
reads `BONUSCLI_*`; here the data directory and the catalog are arguments). Imports model,
paths, catalog, requests, render, service, scenario.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from bonuscli.model import BadInput, BonusError, FilesError, Refused  # noqa: F401  (the API's errors)

__all__ = ["open", "calc", "Program", "BonusError", "Refused", "BadInput", "FilesError"]


def _now(cat, at):
    """`at` as an aware datetime in program time: ISO text as `--at` takes it, a datetime, or the
    clock."""
    from bonuscli import requests as rq

    if at is None:
        return dt.datetime.now(cat.tz).replace(microsecond=0)
    if isinstance(at, dt.datetime):
        if at.tzinfo is None:
            return at.replace(tzinfo=cat.tz, microsecond=0)
        return at.astimezone(cat.tz).replace(microsecond=0)
    return rq.when(at, cat.tz)


def _document(doc):
    """What `--json` prints, read back: plain dicts, lists, strings and numbers."""
    from bonuscli import render

    return json.loads(render.dumps(doc))


def _text(value):
    return value if value is None or isinstance(value, (bool, str)) else str(value)


class Program:
    """A data directory under a catalog (`bonuscli.open`)."""

    def __init__(self, data_dir=None, catalog=None, lock_timeout: float = 10.0):
        from bonuscli import catalog as catalog_mod
        from bonuscli import paths

        self.data_dir = paths.data_dir(str(data_dir) if data_dir is not None else None)
        self.catalog_path = Path(catalog).expanduser() if catalog is not None else catalog_mod.default_path()
        self.lock_timeout = lock_timeout
        self._service = None

    def __repr__(self) -> str:
        return f"<bonuscli.Program data_dir={str(self.data_dir)!r} catalog={str(self.catalog_path)!r}>"

    @property
    def service(self):
        """The service every method runs through (opened on first use)."""
        if self._service is None:
            from bonuscli import service

            self._service = service.open_dir(self.data_dir, self.catalog_path, str(self.catalog_path),
                                             self.lock_timeout)
        return self._service

    @property
    def catalog(self):
        return self.service.catalog

    def run(self, command: str, values: dict, at=None):
        """Run one command by name with its values (keys as in a scenario step): its document."""
        from bonuscli import scenario

        svc = self.service
        doc = scenario.execute(svc, command, values, _now(svc.catalog, at))
        svc.finish()
        return _document(doc)


def _method(command: str, spec):
    keys = tuple(spec.positional)
    named = {k: k for k in list(spec.options) + list(spec.flags)}
    named.update({k.replace("-", "_"): k for k in list(named)})
    required = list(spec.required)

    def method(self, *args, at=None, **kw):
        if len(args) > len(keys):
            raise TypeError(f"{command}() takes at most {len(keys)} positional arguments ({len(args)} given)")
        values = {k: _text(v) for k, v in zip(keys, args)}
        for name, v in kw.items():
            key = named.get(name)
            if key is None:
                raise TypeError(f"{command}() got an unexpected keyword argument {name!r} "
                                f"(its options: {', '.join(sorted(named)) or 'none'})")
            values[key] = bool(v) if key in spec.flags else _text(v)
        if command == "leave":
            values.setdefault("yes", True)
        return self.run(command, values, at)

    args = ", ".join(list(keys) + ["*"] + [f"{k}=None" for k in named if k == k.replace("-", "_")] + ["at=None"])
    method.__name__ = method.__qualname__ = command
    method.__doc__ = (f"{command}({args}): what `bonuscli {command} ... --json` prints"
                      + (f" (required: {', '.join(required)})" if required else "") + ".")
    return method


def _install() -> None:
    from bonuscli import scenario

    for name, spec in scenario.COMMANDS.items():
        setattr(Program, name, _method(name, spec))


_install()


def open(data_dir=None, catalog=None, lock_timeout: float = 10.0) -> Program:  # noqa: A001 (the API's name)
    """The program of a data directory (default: the CLI's, under the user's data directory) under
    a catalog file (default: the bundled catalog.yaml)."""
    return Program(data_dir, catalog, lock_timeout)


def calc(amount, category, tenure_months=None, customer_since=None, card_last_month=None, catalog=None,
         at=None) -> dict:
    """`bonuscli calc AMOUNT --category C ... --json`: the points of a spending, without a data
    directory."""
    from bonuscli import catalog as catalog_mod
    from bonuscli import service

    path = Path(catalog).expanduser() if catalog is not None else catalog_mod.default_path()
    cat = catalog_mod.load(path, str(path))
    months = None
    if tenure_months is not None:
        try:
            months = int(str(tenure_months))
        except ValueError:
            raise BadInput(f"tenure_months must be a whole number (got {tenure_months!r})", "usage") from None
    return _document(service.calc(cat, _now(cat, at), _text(amount), _text(category), months,
                                  _text(customer_since), _text(card_last_month)))
