"""The command line: parse, load the catalog, read ledgers, let the rules decide,
append, render. The only reader of the clock, the environment and argv; the
one error handler of the program. Imports every other module, lazily: a
command imports only what it uses, so `--version` costs little more than Click.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from bonuscli import __version__


class _Lazy:
    """A module imported on first attribute access."""

    def __init__(self, name):
        self.__dict__["_name"] = name

    def __getattr__(self, attr):
        module = importlib.import_module(self.__dict__["_name"])
        return getattr(module, attr)


rules = _Lazy("bonuscli.rules")
ledger_mod = _Lazy("bonuscli.ledger")
paths = _Lazy("bonuscli.paths")
render = _Lazy("bonuscli.render")
model = _Lazy("bonuscli.model")

ENV_DATA = "BONUSCLI_DATA_DIR"
ENV_CATALOG = "BONUSCLI_CATALOG"
ENV_NOW = "BONUSCLI_NOW"
ENV_FAULT = "BONUSCLI_FAULT"  # tests only: "PHASE[:N]" kills the process at the Nth PHASE
ENV_LOCK_TIMEOUT = "BONUSCLI_LOCK_TIMEOUT"


def _path(*args):
    from pathlib import Path

    return Path(*args)


def _datetime():
    import datetime

    return datetime.datetime


# ---------------------------------------------------------------- environment


class Env:
    """What one invocation works with; everything is read once, lazily."""

    def __init__(self, data_dir=None, catalog=None, at=None, as_json=False, debug=False, environ=None):
        environ = os.environ if environ is None else environ
        self.data_dir_text = data_dir or environ.get(ENV_DATA) or None
        self.catalog_text = catalog or environ.get(ENV_CATALOG) or None
        self.at_text = at if at is not None else (environ.get(ENV_NOW) or None)
        self.as_json = as_json
        self.debug = debug
        self.fault_spec = environ.get(ENV_FAULT)
        self.lock_timeout = float(environ.get(ENV_LOCK_TIMEOUT) or ledger_mod.LOCK_TIMEOUT)
        self._catalog = self._now = self._store = None
        self._fault_count = 0

    @property
    def data_dir(self):
        return paths.data_dir(self.data_dir_text)

    @property
    def catalog_path(self):
        from bonuscli import catalog as catalog_mod

        return _path(self.catalog_text).expanduser() if self.catalog_text else catalog_mod.default_path()

    @property
    def catalog(self):
        if self._catalog is None:
            from bonuscli import catalog as catalog_mod

            shown = self.catalog_text or str(self.catalog_path)
            try:
                self._catalog = catalog_mod.load(self.catalog_path, shown, paths.cache_dir(self.data_dir))
            except model.FilesError as e:
                probs = getattr(e, "problems", None)
                if probs:
                    more = f" (and {len(probs) - 1} more; run `bonuscli check`)" if len(probs) > 1 else ""
                    raise model.FilesError(f"invalid catalog: {probs[0]}{more}", "catalog-invalid")
                raise
        return self._catalog

    @property
    def now(self):
        if self._now is None:
            tz = self.catalog.tz
            if self.at_text is not None:
                self._now = model.parse_when(self.at_text, tz).astimezone(tz)
            else:
                self._now = _datetime().now(tz).replace(microsecond=0)
        return self._now

    @property
    def store(self) -> ledger_mod.Store:
        if self._store is None:
            self._store = ledger_mod.Store(self.data_dir, self.lock_timeout)
        return self._store

    def fault(self, phase, phone):
        """Fault injection for the crash tests: BONUSCLI_FAULT=PHASE[:N]."""
        if not self.fault_spec:
            return
        want, _, n = self.fault_spec.partition(":")
        if phase != want:
            return
        self._fault_count += 1
        if self._fault_count == int(n or 1):
            if os.environ.get("BONUSCLI_FAULT_MODE") == "oserror":
                raise OSError(28, "No space left on device")
            os.kill(os.getpid(), 9)


def env_of(ctx: click.Context) -> Env:
    root = ctx.find_root()
    if "env" not in root.meta:
        g = root.meta.setdefault("globals", {})
        root.meta["env"] = env = Env(g.get("data_dir"), g.get("catalog"), g.get("at"), g.get("json", False),
                                     g.get("debug", False))
        if env.at_text is not None:  # a malformed --at / BONUSCLI_NOW is bad input for every command
            import datetime

            model.parse_when(env.at_text, datetime.timezone.utc)
    return root.meta["env"]


def _remember(ctx, param, value):
    if value is not None and value is not False:
        ctx.find_root().meta.setdefault("globals", {})[param.name] = value
    return value


GLOBAL_OPTIONS = [
    click.option("--data-dir", type=click.Path(file_okay=False), expose_value=False, callback=_remember,
                 is_eager=True, help=f"Where ledgers live [env {ENV_DATA}; default: the user data dir]."),
    click.option("--catalog", type=click.Path(dir_okay=False), expose_value=False, callback=_remember,
                 is_eager=True, help=f"The rules file [env {ENV_CATALOG}; default: the bundled catalog.yaml]."),
    click.option("--at", metavar="WHEN", expose_value=False, callback=_remember, is_eager=True,
                 help=f"Act as of this ISO date or date-time [env {ENV_NOW}; default: now]."),
    click.option("--json", "json", is_flag=True, default=False, expose_value=False, callback=_remember,
                 is_eager=True, help="Print JSON for scripts instead of tables."),
    click.option("--debug", is_flag=True, default=False, expose_value=False, callback=_remember, is_eager=True,
                 hidden=True, help="Show a traceback on internal errors."),
]


def global_options(f):
    for opt in reversed(GLOBAL_OPTIONS):
        f = opt(f)
    return f


# ---------------------------------------------------------------- the group and its one error handler


class BonusGroup(click.Group):
    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        args = list(sys.argv[1:] if args is None else args)
        as_json = "--json" in args
        if any("\x00" in str(a) for a in args):
            render.error(model.BadInput("arguments cannot contain NUL bytes", "usage"), as_json)
            if standalone_mode:
                sys.exit(2)
            return 2
        debug = "--debug" in args
        try:
            rv = super().main(args=args, prog_name=prog_name or "bonuscli", complete_var=complete_var,
                              standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except click.exceptions.Exit as e:
            code = e.exit_code
        except click.exceptions.NoArgsIsHelpError as e:  # pragma: no cover - click >= 8.2
            click.echo(e.ctx.get_help())
            code = 0
        except click.UsageError as e:
            msg = e.format_message()
            if e.ctx is not None:
                msg += f" (see `{e.ctx.command_path} --help`)"
            render.error(model.BadInput(msg, "usage"), as_json)
            code = 2
        except click.Abort:
            render.error(model.BonusError("interrupted", "interrupted"), as_json)
            code = 130
        except click.ClickException as e:
            render.error(model.BadInput(e.format_message(), "usage"), as_json)
            code = e.exit_code
        except model.BonusError as e:
            if "--explain" in args and e.steps and not as_json:
                for step in e.steps:
                    render.warn(f"{step['rule']}: {step['detail']}")
            render.error(e, as_json)
            code = e.exit_code
        except BrokenPipeError:
            code = 0
        except KeyboardInterrupt:
            code = 130
        except OSError as e:
            if debug:
                raise
            render.error(model.FilesError(f"{e.strerror or e}: {e.filename or ''}".rstrip(": "), "disk"), as_json)
            code = 3
        except Exception as e:  # the promise: never a traceback
            if debug:
                raise
            render.error(model.BonusError(f"internal error ({type(e).__name__}: {e}); run again with --debug "
                                    "and report it", "internal"), as_json)
            code = 3
        if standalone_mode:
            sys.exit(code)
        return code


@click.group(cls=BonusGroup, context_settings={"help_option_names": ["--help", "-h"]})
@click.version_option(__version__, "--version", prog_name="bonuscli", message="%(prog)s %(version)s")
@global_options
def cli():
    """Run a telecom loyalty-points program (MTS Bonus kind) on plain files.

    \b
    bonuscli catalog --region RU-BRY
    bonuscli join 9161234567 --region RU-MOW --at 2025-03-01
    bonuscli earn 9161234567 500 --category mobile
    """


def main():
    cli.main(prog_name="bonuscli")


def command(*args, **kw):
    """A subcommand that also takes the global options after its name."""

    def deco(f):
        return cli.command(*args, **kw)(global_options(f))

    return deco


# ---------------------------------------------------------------- shared plumbing


def phone_arg(value: str) -> str:
    return model.normalize_phone(value)


def decided(result):
    """The Decision, or the model.Refusal raised as the error it is."""
    if isinstance(result, model.Refusal):
        raise result.error()
    return result


def viewed(result) -> dict:
    return decided(result).view


def warn_torn(led) -> None:
    msg = ledger_mod.torn_warning(led)
    if msg:
        render.warn(msg)


CHECKPOINT_MIN = 400  # events replayed before a member's state is worth saving


def catalog_key(env) -> str:
    if getattr(env, "_catalog_key", None) is None:
        from bonuscli import catalog as catalog_mod

        env.catalog  # a valid catalog first
        env._catalog_key = catalog_mod.identity(env.catalog_path)
    return env._catalog_key


def load_member(env: Env, phone: str, ledgers=None, now=None, full=False, register=False):
    """Replay one member (reading the peers its unsettled gifts and referrals need).

    `ledgers` collects what was read (phone -> LedgerRead; a checkpointed member's entry holds
    only the lines after its checkpoint). `full`: replay every event even when `now` is earlier
    than the last one (for decisions: a repeated ref is then still found, and anything else is
    refused as out of order). `register`: the history rows are needed (no checkpoint).
    """
    ledgers = ledgers if ledgers is not None else {}
    now = now or env.now
    cat = env.catalog
    root = env.data_dir
    path = env.store.path(phone)
    led = ledgers.get(phone)
    snap = None
    if led is None and not register:
        cp = ledger_mod.load_checkpoint(root, phone, catalog_key(env))
        if cp is not None:
            tail = ledger_mod.read_after(path, cp["offset"], cp["last_len"], cp["last_hash"], cp["lines"] + 1)
            first_at = model.from_iso(tail.events[0]["at"]) if tail is not None and tail.events else None
            if tail is not None and (first_at is None or first_at >= cp["advanced_to"]):
                if full and tail.events and tail.events[-1]["at"]:
                    now = max(now, model.from_iso(tail.events[-1]["at"]))
                if now >= cp["advanced_to"]:
                    led, snap = tail, cp
    if led is None:
        led = env.store.read(phone)
    ledgers[phone] = led
    warn_torn(led)
    if snap is None and full and led.events and led.events[-1]["at"]:
        now = max(now, model.from_iso(led.events[-1]["at"]))
    peers = {}
    for p in rules.peers_needed(led.events, now):
        peers[p] = env.store.read(p).events if p != phone else led.events
    if snap is not None:
        m = rules.resume(cat, snap["member"], led.events, now, peers)
        replayed = len(led.events)
    else:
        m = rules.replay(cat, phone, led.events, now, peers, register=register)
        replayed = len(led.events)
    if replayed >= CHECKPOINT_MIN and led.torn is None and rules.checkpointable(m):
        ledger_mod.save_checkpoint(root, phone, catalog_key(env), led, rules.freeze(m), now)
    return m


def stamp(phone: str, count: int, events) -> list:
    out = []
    for i, e in enumerate(events, start=1):
        rest = {k: v for k, v in e.items() if k not in ("type", "at")}
        out.append({"v": model.SCHEMA_VERSION, "id": f"{phone}.{count + i}", "type": e["type"], "at": e["at"], **rest})
    return out


def write_decision(env: Env, result, members, ledgers):
    """Append a Decision's events (after this member's seals), ledger by ledger, in order."""
    for phone, events in result.writes:
        m = members.get(phone)
        led = ledgers[phone]
        evs = (rules.seals(env.catalog, m, env.now) if m is not None else []) + list(events)
        count = (m.count if m is not None else len(led.events)) + (1 if led.torn else 0)
        env.store.append(phone, stamp(phone, count, evs), led, env.fault)


def transact(env: Env, phones, decide):
    """Lock `phones` (sorted), read them under the lock, decide, write, return the view."""
    cat = env.catalog
    now = env.now
    with env.store.locked(phones):
        ledgers = {}
        members = {p: load_member(env, p, ledgers, now, full=True) for p in phones}
        result = decided(decide(cat, members, now))
        write_decision(env, result, members, ledgers)
    return result.view


def emit(env: Env, view, human):
    if env.as_json:
        render.emit_json(view)
    else:
        render.out(human(view))


def kv(view, keys):
    return render.pairs([(k, render.show(view.get(k))) for k in keys])


# ---------------------------------------------------------------- catalog and check


def _completer(values, upper=False):
    """A shell_complete callback offering `values(env)` that start with what was typed.

    It never prints and never raises: a broken catalog or data dir just offers nothing."""

    def complete(ctx, param, incomplete):
        try:
            typed = incomplete.upper() if upper else incomplete
            return [v for v in values(env_of(ctx)) if v.startswith(typed)]
        except Exception:
            return []

    return complete


complete_region = _completer(lambda env: env.catalog.regions, upper=True)
complete_reward = _completer(lambda env: env.catalog.rewards)
complete_category = _completer(lambda env: list(env.catalog.categories) + list(env.catalog.ineligible))
complete_reward_category = _completer(lambda env: env.catalog.reward_categories)
complete_phone = _completer(lambda env: env.store.phones())
complete_channel = _completer(lambda env: env.catalog.channels)


def region_opt(cat, value):
    if value is None:
        return None
    code = value.strip().upper()
    if code not in cat.regions:
        raise model.BadInput(f"unknown region '{value}' (e.g. RU-MOW, RU-SPE, RU-BRY; see `bonuscli catalog --help`)",
                       "unknown-region")
    return code


def reward_json(cat, r, region=None):
    sd = cat.store_discount
    doc = {"code": r.code, "name": r.name, "category": r.category, "price": cat.price_for(r, region),
           "validity_days": r.validity_days, "activation": {"ussd": r.ussd, "sms": r.sms},
           "channels": list(r.channels),
           "limits": [{"per": l.per, "max": l.max} for l in cat.limits_for(r)]}
    if r.code == sd.reward:
        doc["price"] = None
        doc["points_per_rub"] = sd.points_per_rub
        doc["max_share"] = str(sd.max_share)
    if r.region_prices:
        doc["region_prices"] = dict(r.region_prices)
    if r.issues_code:
        doc["issues_code"] = True
    return doc


@command("catalog")
@click.argument("code", required=False, shell_complete=complete_reward)
@click.option("--region", help="Show prices for this home region.", shell_complete=complete_region)
@click.option("--category", "category", help="Only rewards of this category.",
              shell_complete=complete_reward_category)
@click.option("--search", help="Only rewards whose code or name contains this text.")
@click.option("--max-price", type=click.IntRange(min=0), help="Only rewards at most this many points.")
@click.option("--channel", help="Only rewards that can be ordered through this channel.",
              shell_complete=complete_channel)
@click.pass_context
def catalog_cmd(ctx, code, region, category, search, max_price, channel):
    """List the rewards with their price for a region, or show one reward in full.

    \b
    bonuscli catalog --region RU-BRY --category calls
    bonuscli catalog minutes_30 --json
    """
    env = env_of(ctx)
    cat = env.catalog
    region = region_opt(cat, region)
    if code is not None:
        r = cat.rewards.get(code)
        if r is None:
            raise model.BadInput(f"unknown reward '{code}'; `bonuscli catalog` lists the codes", "unknown-reward")
        doc = reward_json(cat, r, region)
        if region:
            doc["region"] = region
        emit(env, doc, lambda d: kv(d, [k for k in d]))
        return
    if category is not None and category not in cat.reward_categories:
        raise model.BadInput(f"unknown reward category '{category}' (categories: {', '.join(cat.reward_categories)})",
                       "unknown-category")
    if channel is not None and channel not in cat.channels:
        raise model.BadInput(f"unknown channel '{channel}' (channels: {', '.join(cat.channels)})", "unknown-channel")
    rows = []
    for r in cat.rewards.values():
        doc = reward_json(cat, r, region)
        if category and r.category != category:
            continue
        if channel and channel not in r.channels:
            continue
        if search and search.lower() not in (r.code + " " + r.name).lower():
            continue
        if max_price is not None and (doc["price"] is None or doc["price"] > max_price):
            continue
        rows.append(doc)
    if env.as_json:
        render.emit_json(rows)
        return
    render.out(render.table(
        [[d["code"], d["name"], d["category"], render.show(d["price"]) if d["price"] is not None else "10/RUB",
          render.show(d["validity_days"]), d["activation"]["ussd"] or d["activation"]["sms"] or "-",
          ",".join(d["channels"])] for d in rows],
        ["code", "name", "category", f"price{' ' + region if region else ''}", "days", "activation", "channels"]))


@command("check")
@click.option("--ledgers", "ledgers", is_flag=True, help="Verify every ledger of the data directory.")
@click.option("--scenario", "scenario", is_flag=True, help="Run the scenario FILES given as arguments.")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--jobs", type=click.IntRange(min=1), help="With --ledgers: processes reading ledgers (default: the core count).")
@click.option("--engine", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="Where whole-directory work runs: this machine's processes, or a Dask cluster.")
@click.option("--scheduler", metavar="ADDRESS", help="With --engine dask: a running scheduler (default: a local cluster).")
@click.pass_context
def check_cmd(ctx, ledgers, scenario, files, jobs, engine, scheduler):
    """Validate a catalog: silent and exit 0 when valid, `file:line: message` lines and exit 3 when not.

    \b
    bonuscli check --catalog my-catalog.yaml
    """
    env = env_of(ctx)
    if files and not scenario:
        raise model.BadInput("FILES are scenario files: use `check --scenario FILE...`", "usage")
    if scenario:
        if not files:
            raise model.BadInput("--scenario needs one or more scenario files", "usage")
        from bonuscli import scenario as scenario_mod

        code = scenario_mod.run_files(env, files, engine, scheduler)
        ctx.exit(code)
    from bonuscli import catalog as catalog_mod

    shown = env.catalog_text or str(env.catalog_path)
    cat, probs = catalog_mod.validate(env.catalog_path, shown)
    if probs:
        if env.as_json:
            render.emit_json({"valid": False, "catalog": shown,
                              "problems": [{"path": p.path, "line": p.line, "message": p.message} for p in probs]})
        for p in probs:
            render.warn(str(p))
        raise model.FilesError(f"{shown}: {len(probs)} problem{'s' if len(probs) != 1 else ''} in the catalog",
                         "catalog-invalid")
    if ledgers:
        from bonuscli import audit

        if engine == "dask":
            from bonuscli import dask_engine

            problems = dask_engine.check_dir(env, scheduler=scheduler)
        else:
            problems = audit.check_dir(env, jobs)
        if problems:
            if env.as_json:
                render.emit_json({"valid": False, "problems": problems})
            for p in problems:
                render.warn(p["text"])
            raise model.FilesError(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in the ledgers of {env.data_dir}",
                             "ledger-unsound")
    if env.as_json:
        render.emit_json({"valid": True, "catalog": shown})


# ---------------------------------------------------------------- members


@command("join")
@click.option("--explain", is_flag=True, help="On a refusal, show the rule and the numbers that refused it.")
@click.argument("phone", shell_complete=complete_phone)
@click.option("--region", required=True, help="Home region code (ISO 3166-2:RU, e.g. RU-MOW).",
              shell_complete=complete_region)
@click.option("--method", default="sms", show_default=True, help="How the subscriber joins (sms, ussd, app, call, store, web, card, wallet).")
@click.option("--email", help="E-mail (web form; with --birth-date gives the profile bonus).")
@click.option("--birth-date", help="Birth date YYYY-MM-DD (web form).")
@click.option("--customer-since", help="Date the subscriber became a customer (default: today).")
@click.option("--referrer", help="Phone of the member who invited this one.", shell_complete=complete_phone)
@click.option("--services", default=None, help="Comma-separated services (default mobile).")
@click.pass_context
def join_cmd(ctx, phone, region, method, email, birth_date, customer_since, referrer, services, explain):
    """Join the program; welcome points are credited at activation.

    \b
    bonuscli join +7 916 123-45-67 --region RU-MOW --method web --email a@b.ru --birth-date 1990-01-01
    """
    env = env_of(ctx)
    view = op_join(env, phone, region, method, email, birth_date, customer_since, referrer, services)
    emit(env, view, human_join)


def human_join(v):
    return kv(v, ["phone", "region", "method", "status", "joined_at", "active_from", "customer_since", "balance"]) + (
        "\n\n" + render.table([[w["reason"], w["points"]] for w in v["welcome"]], ["welcome", "points"])
        if v["welcome"] else "\n\nwelcome         - (this phone was a member before)")


def op_join(env, phone, region, method="sms", email=None, birth_date=None, customer_since=None, referrer=None,
            services=None):
    phone = phone_arg(phone)
    cat = env.catalog
    if region is None:
        raise model.BadInput("joining needs --region CODE (e.g. RU-MOW)", "usage")
    req = {"region": region_opt(cat, region), "method": method.strip().lower()}
    if req["method"] not in cat.methods:
        raise model.BadInput(f"unknown join method '{method}' (methods: {', '.join(cat.methods)})", "unknown-method")
    known = cat.services_eligible + cat.services_ineligible
    svc = [s.strip().lower() for s in (services.split(",") if services is not None else cat.services_default)]
    svc = [s for s in svc if s]
    for s in svc:
        if s not in known:
            raise model.BadInput(f"unknown service '{s}' (services: {', '.join(known)})", "unknown-service")
    if not svc:
        raise model.BadInput("--services needs at least one service", "unknown-service")
    req["services"] = list(dict.fromkeys(svc))
    if email is not None:
        if "@" not in email or any(c.isspace() for c in email.strip()) or len(email) > 254:
            raise model.BadInput(f"not an e-mail address: {email!r}", "bad-email")
        req["email"] = email.strip()
    if birth_date is not None:
        req["birth_date"] = model.parse_date(birth_date, "--birth-date")
        if req["birth_date"] > rules.local_date(cat, env.now):
            raise model.BadInput("--birth-date is in the future", "bad-date")
    if customer_since is not None:
        req["customer_since"] = model.parse_date(customer_since, "--customer-since")
        if req["customer_since"] > rules.local_date(cat, env.now):
            raise model.BadInput("--customer-since cannot be after the join date", "bad-date")
    phones = [phone]
    if referrer is not None:
        req["referrer"] = phone_arg(referrer)
        if req["referrer"] != phone:
            phones.append(req["referrer"])

    def decide(cat, members, now):
        return rules.join(cat, members[phone], now, req, members.get(req.get("referrer")))

    return transact(env, phones, decide)


@command("balance")
@click.argument("phone", shell_complete=complete_phone)
@click.pass_context
def balance_cmd(ctx, phone):
    """Show a member's points, status, gifts and active rewards.

    \b
    bonuscli balance 9161234567
    """
    env = env_of(ctx)
    emit(env, op_balance(env, phone), human_balance)


def op_balance(env, phone):
    phone = phone_arg(phone)
    return viewed(rules.balance(load_member(env, phone), env.now))


def human_balance(v):
    if True:
        text = kv(v, ["phone", "region", "status", "available", "held_out", "debt", "next_expiry", "coefficient",
                      "customer_since"])
        if v["pending_in"]:
            text += "\n\n" + render.table([[g["gift_id"], g["from"], g["points"], g["deadline"]] for g in v["pending_in"]],
                                          ["gift", "from", "points", "accept before"])
        if v["active_rewards"]:
            text += "\n\n" + render.table([[r["code"], r["name"], r["active_until"]] for r in v["active_rewards"]],
                                          ["reward", "name", "active until"])
        return text


@command("history")
@click.argument("phone", shell_complete=complete_phone)
@click.pass_context
def history_cmd(ctx, phone):
    """List a member's events oldest first, with the running balance (JSON lines with --json).

    \b
    bonuscli history 9161234567 --json
    """
    env = env_of(ctx)
    phone = phone_arg(phone)
    m = load_member(env, phone, register=True)
    if m.join is None and not m.register:
        raise not_member_error(phone)
    rows = m.register
    if env.as_json:
        render.emit_json_lines(rows)
        return
    render.out(render.table([[r["at"], r["type"], f"{r['points']:+d}" if r["points"] else "0", r["balance"], r["detail"]]
                             for r in rows], ["at", "event", "points", "balance", "detail"]))


def not_member_error(phone):
    return rules.not_member(phone).error()


@command("leave")
@click.argument("phone", shell_complete=complete_phone)
@click.option("--yes", is_flag=True, help="Confirm: every point is forfeited and cannot be restored.")
@click.pass_context
def leave_cmd(ctx, phone, yes):
    """Leave the program, forfeiting every point (needs --yes).

    \b
    bonuscli leave 9161234567 --yes
    """
    env = env_of(ctx)
    phone = phone_arg(phone)
    if not yes:
        raise model.BadInput("leaving forfeits every point and cannot be undone; add --yes to confirm", "confirm")
    emit(env, op_leave(env, phone), lambda v: kv(v, ["phone", "status", "forfeited", "left_at"]))


def op_leave(env, phone):
    phone = phone_arg(phone)
    return transact(env, [phone], lambda cat, members, now: rules.leave(cat, members[phone], now))


@command("path")
@click.argument("phone", required=False, shell_complete=complete_phone)
@click.pass_context
def path_cmd(ctx, phone):
    """Print where the data directory, the catalog in use and a member's ledger are.

    \b
    bonuscli path 9161234567
    """
    env = env_of(ctx)
    view = {"data_dir": str(env.data_dir), "catalog": str(env.catalog_path),
            "ledgers": str(paths.ledgers_dir(env.data_dir))}
    if phone is not None:
        view["ledger"] = str(paths.ledger_path(env.data_dir, phone_arg(phone)))
    emit(env, view, lambda v: kv(v, list(v)))


# ---------------------------------------------------------------- earning


def earn_human(v):
    text = kv(v, ["phone", "amount", "category", "points", "coefficient", "rub_per_point", "duplicate", "balance"])
    for b in v.get("bonuses", ()):
        text += f"\nbonus          {b['reason']} +{b['points']}"
    if v.get("dry_run"):
        text += "\n(dry run: nothing was written)"
    return text


@command("earn")
@click.argument("phone", required=False, shell_complete=complete_phone)
@click.argument("amount", required=False)
@click.option("--category", "category", help="Spending category (mobile, card, taxi, ...).",
              shell_complete=complete_category)
@click.option("--ref", help="Transaction id: a repeat with the same ref changes nothing.")
@click.option("--dry-run", is_flag=True, help="Compute without writing.")
@click.option("--explain", is_flag=True, help="Show each rule applied (also on a refusal).")
@click.option("--from", "from_file", type=click.Path(dir_okay=False, allow_dash=True),
              help="Batch: a CSV (phone,amount,category,ref[,at]) or JSON-lines file, - for stdin.")
@click.option("--jobs", type=click.IntRange(min=1), help="Batch: processes to spread members over (default: the core count).")
@click.pass_context
def earn_cmd(ctx, phone, amount, category, ref, dry_run, explain, from_file, jobs):
    """Record a spending and credit its points (or a whole batch with --from).

    \b
    bonuscli earn 9161234567 500 --category mobile --ref tx-1001
    bonuscli earn --from payments.csv --json
    """
    env = env_of(ctx)
    if from_file is not None:
        from_batch(ctx, env, from_file, "EARN", "earning", jobs,
                   {"PHONE": phone, "AMOUNT": amount, "--category": category, "--ref": ref}, dry_run)
    if phone is None or amount is None:
        raise model.BadInput("earn needs PHONE and AMOUNT (or --from FILE)", "usage")
    if category is None:
        raise model.BadInput("earn needs --category (e.g. mobile, card, taxi)", "usage")
    phone = phone_arg(phone)
    cat = env.catalog
    value = model.parse_amount(amount, cat.amount_max)
    category = category.strip().lower()
    if ref is not None:
        ref = check_ref(ref)
    if dry_run:
        view = viewed(rules.earn(cat, load_member(env, phone, full=True), env.now, value, category, ref, dry_run=True))
    else:
        view = transact(env, [phone], lambda cat, members, now: rules.earn(cat, members[phone], now, value, category, ref))
    if explain:
        view["steps"] = view.get("_steps", [])
    emit(env, view, lambda v: earn_human(v) + (
        "\n\n" + "\n".join(f"{s['rule']}: {s['detail']}" for s in v["steps"]) if explain else ""))


def parse_total(text, what):
    """A non-negative rouble total (0 allowed), exact."""
    from decimal import Decimal

    if text is None or str(text).strip() in ("0", "0.0", "0.00"):
        return Decimal(0)
    return model.parse_amount(text, Decimal("1000000000000"), what)


def from_batch(ctx, env, source, spec, title, jobs, given: dict, dry_run=False):
    """Run a `--from FILE` batch and exit with its code; the per-row values must come from the file."""
    if any(v is not None for v in given.values()):
        raise model.BadInput(f"--from takes no {', '.join(given)}: they come from the file", "usage")
    from bonuscli import batch

    ctx.exit(batch.run(env, source, getattr(batch, spec), dry_run, title, jobs))


def check_ref(ref: str) -> str:
    ref = str(ref)
    if not ref.strip() or len(ref) > 200 or any(ord(c) < 32 for c in ref):
        raise model.BadInput("--ref must be a non-empty text of at most 200 printable characters", "bad-ref")
    return ref


@command("calc")
@click.argument("amount")
@click.option("--category", "category", required=True, shell_complete=complete_category)
@click.option("--tenure-months", type=click.IntRange(min=0), help="Customer for exactly N whole months.")
@click.option("--customer-since", help="Customer since this date (tenure as of --at).")
@click.option("--card-last-month", help="Card payments of the previous calendar month, RUB (default 0).")
@click.option("--explain", is_flag=True, help="Show each rule applied.")
@click.pass_context
def calc_cmd(ctx, amount, category, tenure_months, customer_since, card_last_month, explain):
    """What-if: the points a spending would earn, with no ledger at all.

    \b
    bonuscli calc 500 --category mobile --tenure-months 13
    """
    env = env_of(ctx)
    cat = env.catalog
    value = model.parse_amount(amount, cat.amount_max)
    if tenure_months is not None and customer_since is not None:
        raise model.BadInput("give --tenure-months or --customer-since, not both", "usage")
    since = model.parse_date(customer_since, "--customer-since") if customer_since else None
    last = parse_total(card_last_month, "--card-last-month")
    on = rules.local_date(cat, env.now) if since is not None else None
    view = viewed(rules.calc(cat, value, category.strip().lower(), months=tenure_months, since=since, on=on,
                              card_last_month=last))
    if explain:
        view["steps"] = view["_steps"]
    emit(env, view, lambda v: kv(v, ["amount", "category", "rub_per_point", "coefficient", "points"]) + (
        "\n\n" + "\n".join(f"{s['rule']}: {s['detail']}" for s in v["steps"]) if explain else ""))


# ---------------------------------------------------------------- forecast and redeem


@command("forecast")
@click.argument("phone", shell_complete=complete_phone)
@click.option("--days", type=click.IntRange(min=0), help="Window of N days from today (default 30).")
@click.option("--until", "until", help="Window up to and including this date.")
@click.pass_context
def forecast_cmd(ctx, phone, days, until):
    """Show the points that expire soon (SMS PROGNOS), and a 12-month chart.

    \b
    bonuscli forecast 9161234567 --days 60
    """
    env = env_of(ctx)
    if days is not None and until is not None:
        raise model.BadInput("give --days or --until, not both", "usage")
    until_d = model.parse_date(until, "--until") if until else None
    emit(env, op_forecast(env, phone, days, until_d), human_forecast)


def op_forecast(env, phone, days=None, until=None):
    return viewed(rules.forecast(load_member(env, phone_arg(phone)), env.now, days, until))


def human_forecast(v):
    if True:
        text = render.table([[l["expires_on"], l["points"]] for l in v["lots"]], ["expires on", "points"])
        text += f"\n\ntotal {v['total']} points expiring up to {v['until']}\n\nnext 12 months:\n"
        text += render.bars([(m["month"], m["points"]) for m in v["months"]])
        return text


@command("redeem")
@click.option("--explain", is_flag=True, help="On a refusal, show the rule and the numbers that refused it.")
@click.argument("phone", shell_complete=complete_phone)
@click.argument("code", shell_complete=complete_reward)
@click.option("--via", "via", default="web", show_default=True, help="Channel: web, app, sms, ussd, store.",
              shell_complete=complete_channel)
@click.option("--price", "price", help="Store discount: the item's price in RUB.")
@click.option("--points", "points", type=int, help="Store discount: points to use (default: as many as allowed).")
@click.pass_context
def redeem_cmd(ctx, phone, code, via, price, points, explain):
    """Order a reward, paying its price for the member's region in points.

    \b
    bonuscli redeem 9161234567 minutes_30
    bonuscli redeem 9161234567 store_discount --via store --price 1999.90
    """
    env = env_of(ctx)
    emit(env, op_redeem(env, phone, code, via, price, points), human_redeem)


def human_redeem(v):
    return kv(v, [k for k in ("phone", "code", "name", "points_spent", "balance", "active_until", "voucher",
                              "price_rub", "discount_rub", "to_pay_rub") if k in v])


def op_redeem(env, phone, code, via="web", price=None, points=None):
    phone = phone_arg(phone)
    cat = env.catalog
    if code not in cat.rewards:
        raise model.BadInput(f"unknown reward '{code}'; `bonuscli catalog` lists the codes", "unknown-reward")
    via = via.strip().lower()
    if via not in cat.channels:
        raise model.BadInput(f"unknown channel '{via}' (channels: {', '.join(cat.channels)})", "unknown-channel")
    price_rub = model.parse_amount(price, cat.amount_max, "--price") if price is not None else None
    if code != cat.store_discount.reward and (price is not None or points is not None):
        raise model.BadInput("--price and --points are for the store discount only", "usage")
    return transact(env, [phone], lambda cat, members, now: rules.redeem(cat, members[phone], now, code, via,
                                                                        price_rub, points))


# ---------------------------------------------------------------- gifts


@command("gift")
@click.option("--explain", is_flag=True, help="On a refusal, show the rule and the numbers that refused it.")
@click.argument("sender", metavar="FROM", shell_complete=complete_phone)
@click.argument("recipient", metavar="TO", shell_complete=complete_phone)
@click.argument("points", type=int)
@click.pass_context
def gift_cmd(ctx, sender, recipient, points, explain):
    """Offer points to another member of the same region; they have 30 days to accept.

    \b
    bonuscli gift 9161234567 9167654321 100
    """
    env = env_of(ctx)
    emit(env, op_gift(env, sender, recipient, points),
         lambda v: kv(v, ["gift_id", "from", "to", "points", "offered_at", "deadline", "balance"]))


def op_gift(env, sender, recipient, points):
    s, r = phone_arg(sender), phone_arg(recipient)
    return transact(env, [s, r], lambda cat, members, now: rules.gift(cat, members[s], members[r], now, points))


@command("accept")
@click.argument("phone", shell_complete=complete_phone)
@click.argument("gift_id")
@click.option("--reject", is_flag=True, help="Reject the gift: the points go back to the sender.")
@click.pass_context
def accept_cmd(ctx, phone, gift_id, reject):
    """Accept (or --reject) a pending gift.

    \b
    bonuscli accept 9167654321 gk3m9pq
    """
    env = env_of(ctx)
    phone = phone_arg(phone)
    gift_id = gift_id.strip().lower()
    if not gift_id.isalnum() or len(gift_id) > 32:
        raise model.BadInput(f"not a gift id: {gift_id!r}", "bad-gift-id")
    m = load_member(env, phone)
    g = m.gifts_in.get(gift_id)
    if g is None:
        if m.join is None:
            raise not_member_error(phone)
        raise model.Refusal(1, "gift-not-found", f"no gift {gift_id} was offered to {phone}").error()
    sender = g["from"]

    def decide(cat, members, now):
        return rules.accept(cat, members[phone], members[sender], now, gift_id, reject)

    view = transact(env, [phone, sender], decide)
    emit(env, view, lambda v: kv(v, ["gift_id", "status", "points", "balance"]))


# ---------------------------------------------------------------- the operator's channels


def _operator(env, phone, text, region, kind):
    from bonuscli import channels

    cat = env.catalog
    phone = phone_arg(phone)
    m = load_member(env, phone)
    member = rules.status(m, env.now) not in ("none", "left")
    act = (channels.parse_sms if kind == "sms" else channels.parse_ussd)(cat, text, member)
    result, error = None, None
    try:
        if act.action == "join":
            if region is None:
                raise model.BadInput(f"{phone} is not a member: to join by {kind}, give --region CODE", "usage")
            result = op_join(env, phone, region, act.args["method"])
        elif act.action == "balance":
            result = op_balance(env, phone)
        elif act.action == "forecast":
            result = op_forecast(env, phone)
        elif act.action == "leave":
            result = op_leave(env, phone)
        elif act.action == "gift":
            result = op_gift(env, phone, act.args["to"], act.args["points"])
        elif act.action == "redeem":
            result = op_redeem(env, phone, act.args["code"], kind)
        elif act.action == "not-member":
            raise rules.not_member(phone).error()
        elif act.action == "already":
            raise model.Refusal(1, "already-member", f"{phone} is already a member").error()
        else:
            hint = act.args.get("hint") or (channels.sms_help(cat) if kind == "sms" else
                                            "dial *111*455*0# for your balance, or a reward's USSD code to order it")
            shown = text if len(text) <= 24 else text[:20] + "..."
            raise model.BadInput(f"unknown {'text' if kind == 'sms' else 'code'} {shown!r}: {hint}", "unknown-text")
    except model.BonusError as e:
        error = e
    line = channels.reply(act.action, result) if error is None else error.message
    action = act.action if act.action in ("join", "balance", "forecast", "leave", "gift", "redeem") else None
    if env.as_json:
        doc = {"reply": line, "action": action, "result": result}
        if error is not None:
            doc["error"] = {"code": error.exit_code, "kind": error.kind, "message": error.message}
        render.emit_json(doc)
    else:
        render.out(line)
    if error is not None:
        raise error


@command("sms")
@click.argument("phone", shell_complete=complete_phone)
@click.argument("text", nargs=-1, required=True)
@click.option("--region", help="Home region, when the text makes a non-member join.", shell_complete=complete_region)
@click.pass_context
def sms_cmd(ctx, phone, text, region):
    """Send TEXT to the short number 4555 and print its one-line reply.

    \b
    bonuscli sms 9161234567 BAL
    bonuscli sms 9161234567 "DAR 9167654321 100"
    """
    _operator(env_of(ctx), phone, " ".join(text), region, "sms")


@command("ussd")
@click.argument("phone", shell_complete=complete_phone)
@click.argument("code")
@click.option("--region", help="Home region, when the code makes a non-member join.", shell_complete=complete_region)
@click.pass_context
def ussd_cmd(ctx, phone, code, region):
    """Dial a USSD CODE and print the one-line answer.

    \b
    bonuscli ussd 9161234567 '*111*455*0#'
    """
    _operator(env_of(ctx), phone, code, region, "ussd")


# ---------------------------------------------------------------- completion


SHELLS = ("bash", "zsh", "fish")


@command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion_cmd(ctx, shell):
    """Print the shell completion script for bash, zsh or fish.

    \b
    bonuscli completion bash > ~/.local/share/bash-completion/completions/bonuscli
    """
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    render.out(cls(cli, {}, "bonuscli", "_BONUSCLI_COMPLETE").source())


# ---------------------------------------------------------------- rule changes under CI


@command("diff")
@click.argument("old", type=click.Path(dir_okay=False))
@click.argument("new", type=click.Path(dir_okay=False))
@click.option("--ledgers", "ledgers", is_flag=True, help="Replay the data directory's members under both catalogs.")
@click.option("--scenario", "scenario", type=click.Path(dir_okay=False),
              help="Replay this scenario's members under both catalogs.")
@click.option("--fail-on", "fail_on", default="", help="Comma-separated change kinds that exit 1 (e.g. price-increase).")
@click.option("--engine", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="Where whole-directory work runs: this machine's processes, or a Dask cluster.")
@click.option("--scheduler", metavar="ADDRESS", help="With --engine dask: a running scheduler (default: a local cluster).")
@click.pass_context
def diff_cmd(ctx, old, new, ledgers, scenario, fail_on, engine, scheduler):
    """What changed between two catalogs, and what it does to members.

    \b
    bonuscli diff catalog.yaml new-catalog.yaml --ledgers --fail-on price-increase
    """
    from bonuscli import diff as diff_mod

    code = diff_mod.run(env_of(ctx), old, new, ledgers, scenario, [k.strip() for k in fail_on.split(",") if k.strip()],
                        engine, scheduler)
    ctx.exit(code)


# ---------------------------------------------------------------- corrections and explanations


def parse_points(text, what="POINTS") -> int:
    s = str(text).strip()
    if not s.lstrip("+-").isdigit() or len(s) > 12:
        raise model.BadInput(f"{what} must be a whole number of points (got {text!r})", "bad-points")
    return int(s)


@command("refund")
@click.argument("phone", required=False, shell_complete=complete_phone)
@click.argument("ref", required=False)
@click.option("--amount", help="Refunded RUB (default: all that is left of the spending).")
@click.option("--ref", "refund_ref", help="This refund's own reference: a repeat changes nothing.")
@click.option("--from", "from_file", type=click.Path(dir_okay=False, allow_dash=True),
              help="Batch: CSV (phone,ref,amount,refund_ref[,at]) or JSON lines, - for stdin.")
@click.option("--jobs", type=click.IntRange(min=1), help="Batch: processes to spread members over (default: the core count).")
@click.option("--explain", is_flag=True, help="Show how the points taken back were computed.")
@click.pass_context
def refund_cmd(ctx, phone, ref, amount, refund_ref, from_file, explain, jobs):
    """Take back the points of a refunded spending (recorded with earn --ref REF).

    \b
    bonuscli refund 9161234567 tx-1001 --amount 200 --ref rf-1
    """
    env = env_of(ctx)
    if from_file is not None:
        from_batch(ctx, env, from_file, "REFUND", "refunding", jobs,
                   {"PHONE": phone, "REF": ref, "--amount": amount, "--ref": refund_ref})
    if phone is None or ref is None:
        raise model.BadInput("refund needs PHONE and REF (or --from FILE)", "usage")
    phone = phone_arg(phone)
    cat = env.catalog
    value = model.parse_amount(amount, cat.amount_max, "--amount") if amount is not None else None
    ref = check_ref(ref)
    refund_ref = check_ref(refund_ref) if refund_ref is not None else None
    view = transact(env, [phone], lambda cat, members, now: rules.refund(cat, members[phone], now, ref, value, refund_ref))
    if explain:
        view["steps"] = view.get("_steps", [])
    emit(env, view, lambda v: kv(v, ["phone", "ref", "amount", "points", "points_taken", "debt", "not_recovered",
                                     "duplicate", "balance"]) + (
        "\n\n" + "\n".join(f"{s['rule']}: {s['detail']}" for s in v["steps"]) if explain else ""))


@command("adjust", context_settings={"ignore_unknown_options": True})
@click.argument("phone", required=False, shell_complete=complete_phone)
@click.argument("points", required=False)
@click.option("--reason", help="Why (kept in the ledger; required).")
@click.option("--ref", help="Reference: a repeat with the same ref changes nothing.")
@click.option("--expires-on", help="Expiry date of a credit (default: the normal 12 months).")
@click.option("--from", "from_file", type=click.Path(dir_okay=False, allow_dash=True),
              help="Batch: CSV (phone,points,reason,ref[,expires_on,region,at]) or JSON lines, - for stdin.")
@click.option("--jobs", type=click.IntRange(min=1), help="Batch: processes to spread members over (default: the core count).")
@click.pass_context
def adjust_cmd(ctx, phone, points, reason, ref, expires_on, from_file, jobs):
    """An operator's credit (+POINTS) or debit (-POINTS), always with a reason.

    \b
    bonuscli adjust 9161234567 200 --reason "goodwill: outage 2025-03-01" --ref ticket-77
    bonuscli adjust 9161234567 -50 --reason "duplicate credit"
    """
    env = env_of(ctx)
    if from_file is not None:
        from_batch(ctx, env, from_file, "ADJUST", "adjusting", jobs,
                   {"PHONE": phone, "POINTS": points, "--reason": reason, "--ref": ref})
    if phone is None or points is None:
        raise model.BadInput("adjust needs PHONE and POINTS (or --from FILE)", "usage")
    phone = phone_arg(phone)
    n = parse_points(points)
    if not reason or not reason.strip():
        raise model.BadInput("adjust needs --reason TEXT (kept in the ledger)", "usage")
    ref = check_ref(ref) if ref is not None else None
    exp = model.parse_date(expires_on, "--expires-on") if expires_on is not None else None
    view = transact(env, [phone], lambda cat, members, now: rules.adjust(cat, members[phone], now, n, reason.strip(),
                                                                        ref, exp))
    emit(env, view, lambda v: kv(v, ["phone", "points", "reason", "duplicate", "balance"]))


@command("explain")
@click.argument("phone", shell_complete=complete_phone)
@click.argument("key", metavar="[REF_OR_EVENT_ID]", required=False)
@click.pass_context
def explain_cmd(ctx, phone, key):
    """Why a number is what it is: one earn, refund or adjustment, or the whole balance as lots.

    \b
    bonuscli explain 9161234567 tx-1001
    """
    env = env_of(ctx)
    phone = phone_arg(phone)
    view = viewed(rules.explain(env.catalog, load_member(env, phone, register=True), env.now, key))
    emit(env, view, lambda v: "\n".join(f"{s['rule']}: {s['detail']}" for s in v["steps"]))


@command("report")
@click.option("--region", help="Only members of this home region.", shell_complete=complete_region)
@click.option("--from", "from_date", help="First date of the monthly figures (YYYY-MM-DD).")
@click.option("--until", "until_date", help="Last date of the monthly figures (YYYY-MM-DD).")
@click.option("--jobs", type=click.IntRange(min=1), help="Processes reading ledgers (default: the core count).")
@click.option("--engine", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="Where whole-directory work runs: this machine's processes, or a Dask cluster.")
@click.option("--scheduler", metavar="ADDRESS", help="With --engine dask: a running scheduler (default: a local cluster).")
@click.pass_context
def report_cmd(ctx, region, from_date, until_date, jobs, engine, scheduler):
    """Program-wide figures over the data directory as of --at.

    \b
    bonuscli report --region RU-MOW --from 2025-01-01 --json
    """
    from bonuscli import fleet

    env = env_of(ctx)
    region = region_opt(env.catalog, region)
    f = model.parse_date(from_date, "--from") if from_date else None
    u = model.parse_date(until_date, "--until") if until_date else None
    if engine == "dask":
        from bonuscli import dask_engine

        view = dask_engine.report(env, region, f, u, scheduler=scheduler)
    else:
        view = fleet.report(env, region, f, u, jobs)

    def human(v):
        text = kv(v["members"], list(v["members"])) + f"\n\noutstanding  {v['outstanding']}\ndebt         {v['debt']}"
        text += "\n\n" + render.table([[m["month"], m["earned"], m["redeemed"], m["expired"], m["gifted"], m["refunded"],
                                        m["forfeited"]] for m in v["months"]],
                                      ["month", "earned", "redeemed", "expired", "gifted", "refunded", "forfeited"])
        text += "\n\nexpiring, next 12 months:\n" + render.bars([(e["month"], e["points"]) for e in v["expiring"]])
        return text

    emit(env, view, human)
