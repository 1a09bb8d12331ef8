"""The command line: parse, call the service layer, render.

The only reader of the clock, the environment and argv, and the one error
handler of the program (CLI.md §2). Commands turn Click's values into requests
(bonuscli.requests), call bonuscli.service (or the whole-directory modules
over it), and print what they return. Imported by `__main__` alone. Imports
lazily, so `--version` costs little more than Click.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from bonuscli.version import __version__


class _Lazy:
    """A module imported on first attribute access."""

    def __init__(self, name):
        self.__dict__["_name"] = name

    def __getattr__(self, attr):
        module = importlib.import_module(self.__dict__["_name"])
        return getattr(module, attr)


model = _Lazy("bonuscli.model")
rq = _Lazy("bonuscli.requests")
render = _Lazy("bonuscli.render")
service_mod = _Lazy("bonuscli.service")
paths = _Lazy("bonuscli.paths")

ENV_DATA = "BONUSCLI_DATA_DIR"
ENV_CATALOG = "BONUSCLI_CATALOG"
ENV_NOW = "BONUSCLI_NOW"
ENV_FAULT = "BONUSCLI_FAULT"  # tests only: "PHASE[:N]" kills the process at the Nth PHASE
ENV_LOCK_TIMEOUT = "BONUSCLI_LOCK_TIMEOUT"


# ---------------------------------------------------------------- environment


class Env:
    """What one invocation works with: options and variables, read once; the service, built lazily."""

    def __init__(self, data_dir=None, catalog=None, at=None, as_json=False, debug=False, environ=None, fmt=None):
        environ = os.environ if environ is None else environ
        self.fmt = "json" if as_json else (fmt or "table")
        as_json = self.fmt == "json"
        self.data_dir_text = data_dir or environ.get(ENV_DATA) or None
        self.catalog_text = catalog or environ.get(ENV_CATALOG) or None
        self.catalog_option = bool(catalog)  # given as --catalog on the command line (not by the environment)
        self.at_text = at if at is not None else (environ.get(ENV_NOW) or None)
        self.as_json = as_json
        self.debug = debug
        self.fault_spec = environ.get(ENV_FAULT)
        self.fault_mode = environ.get("BONUSCLI_FAULT_MODE")
        timeout = environ.get(ENV_LOCK_TIMEOUT)
        try:
            self.lock_timeout = float(timeout) if timeout else 10.0
            if not 0 <= self.lock_timeout <= 86400:
                raise ValueError
        except ValueError:
            raise model.BadInput(f"{ENV_LOCK_TIMEOUT} must be a number of seconds from 0 to 86400 "
                                 f"(got {timeout!r})", "usage")
        self._service = self._catalog = self._now = None
        self.catalog_cache = True  # False: the catalog parsed, its cache neither read nor written (check)
        self._fault_count = None
        if self.fault_spec:  # tests only: one count for the command and the workers it forks (--jobs)
            import multiprocessing

            self._fault_count = multiprocessing.Value("q", 0)
            self._fault_pid = os.getpid()

    @property
    def data_dir(self):
        return paths.data_dir(self.data_dir_text)

    @property
    def catalog_path(self):
        from pathlib import Path

        from bonuscli import catalog as catalog_mod

        return Path(self.catalog_text).expanduser() if self.catalog_text else catalog_mod.default_path()

    @property
    def shown_catalog(self) -> str:
        return self.catalog_text or str(self.catalog_path)

    @property
    def service(self):
        if self._service is None:
            try:
                self._service = service_mod.open_dir(self.data_dir, self.catalog_path, self.shown_catalog,
                                                     self.lock_timeout, self.fault if self.fault_spec else None,
                                                     render.warn,
                                                     catalog_cache=self.catalog_cache)
            except model.FilesError as e:
                raise self._catalog_error(e)
            if _ONE_SHOT:
                self._service.keep_alive = []
        return self._service

    @property
    def catalog(self):
        return self.service.catalog

    def _catalog_error(self, e):
        if getattr(e, "kind", None) == "catalog-missing" and self.catalog_option:
            # the --catalog PATH typed leads nowhere: bad input, exit 2 (CLI.md §2), as a missing data
            # directory is. (A BONUSCLI_CATALOG that leads nowhere stays exit 3, the setup's trouble.)
            return model.BadInput(f"{e.message} (give an existing file with --catalog PATH, or leave it out "
                                  "for the installed catalog)", "catalog-missing")
        probs = getattr(e, "problems", None)
        if not probs:
            return e
        hint = f"bonuscli check --catalog {self.catalog_text}" if self.catalog_text else "bonuscli check"
        more = f" (and {len(probs) - 1} more; run `{hint}`)" if len(probs) > 1 else ""
        return model.FilesError(f"invalid catalog: {probs[0]}{more}", "catalog-invalid")

    @property
    def now(self):
        if self._now is None:
            tz = self.catalog.tz
            if self.at_text is not None:
                self._now = rq.when(self.at_text, tz)
            else:
                import datetime

                self._now = datetime.datetime.now(tz).replace(microsecond=0)
        return self._now

    def fault(self, phase, phone):
        """Fault injection for the crash tests: BONUSCLI_FAULT=PHASE[:N] kills the command at its Nth
        PHASE (or raises a disk error, BONUSCLI_FAULT_MODE=oserror), counted across the worker
        processes a batch forks (--jobs). In a worker it kills the command's process first, so the
        whole batch dies at that write point (the other workers with it: workers.orphan_guard)."""
        if not self.fault_spec:
            return
        want, _, n = self.fault_spec.partition(":")
        if phase != want:
            return
        with self._fault_count.get_lock():
            self._fault_count.value += 1
            hit = self._fault_count.value == int(n or 1)
        if hit:
            if self.fault_mode == "oserror":
                raise OSError(28, "No space left on device")
            if os.getpid() != self._fault_pid and os.getppid() == self._fault_pid:
                os.kill(self._fault_pid, 9)
            os.kill(os.getpid(), 9)


def env_of(ctx: click.Context) -> Env:
    root = ctx.find_root()
    if "env" not in root.meta:
        g = root.meta.setdefault("globals", {})
        root.meta["env"] = env = Env(g.get("data_dir"), g.get("catalog"), g.get("at"), g.get("json", False),
                                     g.get("debug", False), fmt=g.get("fmt"))
        if isinstance(root.command, BonusGroup):
            root.command._env = env
        if env.at_text is not None:  # a malformed --at / BONUSCLI_NOW is bad input for every command
            import datetime

            rq.when(env.at_text, datetime.timezone.utc)
    return root.meta["env"]


def _remember(ctx, param, value):
    if value is not None and value is not False:
        ctx.find_root().meta.setdefault("globals", {})[param.name] = value
    return value


def _remember_table(ctx, param, value):
    """--table NAME, remembered as the other global options are; a writing command's tables are known
    before it runs (render.WRITES), so a name it does not have is refused before anything is written;
    a command that prints no table (render.UNTABLED) refuses every name (render.check_table_parsed)."""
    _remember(ctx, param, value)
    name = ctx.find_root().meta.get("globals", {}).get("table")
    command = ctx.command.name if ctx.parent is not None else None
    if not ctx.resilient_parsing:
        render.check_table_parsed(name, command)
    return value


def _global_specs():
    """(declarations, attributes) of the global options, which the group and every subcommand take."""
    return [
        (("--data-dir",), dict(type=click.Path(file_okay=False), expose_value=False, callback=_remember,
                               is_eager=True, help=f"Where ledgers live [env {ENV_DATA}; default: the user data dir].")),
        (("--catalog",), dict(type=click.Path(dir_okay=False), expose_value=False, callback=_remember, is_eager=True,
                              help=f"The rules file [env {ENV_CATALOG}; default: the bundled catalog.yaml].")),
        (("--at",), dict(metavar="WHEN", expose_value=False, callback=_remember, is_eager=True,
                         help=f"Act as of this ISO date or date-time [env {ENV_NOW}; default: now].")),
        (("--json", "json"), dict(is_flag=True, default=False, expose_value=False, callback=_remember,
                                  is_eager=True, help="Print JSON for scripts instead of tables (= --format json).")),
        (("--format", "fmt"), dict(type=click.Choice(FORMATS), expose_value=False, callback=_remember, is_eager=True,
                                   help="Output: table (for people), json, csv or tsv (rows with a header).")),
        (("--table", "table"), dict(metavar="NAME", expose_value=False, callback=_remember_table, is_eager=True,
                                    help="Print this one of the command's flat tables (csv, tsv, table output; "
                                         "an unknown NAME lists them).")),
        (("--debug",), dict(is_flag=True, default=False, expose_value=False, callback=_remember, is_eager=True,
                            hidden=True, help="Show a traceback on internal errors.")),
    ]


FORMATS = ("table", "json", "csv", "tsv")
GLOBAL_SPECS = _global_specs()
GLOBAL_OPTIONS = [click.option(*decls, **attrs) for decls, attrs in GLOBAL_SPECS]


def global_options(f):
    for opt in reversed(GLOBAL_OPTIONS):
        f = opt(f)
    return f


def _globals_in(args) -> dict:
    """How to show an error raised before the command's parameters were processed: the --json,
    --debug and --format among `args`, by the names GLOBAL_SPECS declares, read leniently (no
    private Click parser): other options and arguments are skipped, --format takes the next word
    or its `=VALUE`, and `--` is skipped too, so `catalog -- --json` (where Click takes --json for
    the code asked for) still fails in JSON. A flag given a value (`--json=x`) or a --format
    without one is itself the usage error: then none count."""
    options = {}  # "--json" -> ("json", takes a value?)
    for decls, attrs in GLOBAL_SPECS:
        names = [d for d in decls if d.startswith("-")]
        dest = next((d for d in decls if not d.startswith("-")), names[0].lstrip("-").replace("-", "_"))
        if dest in ("json", "debug", "fmt"):
            options.update({n: (dest, not attrs.get("is_flag", False)) for n in names})
    words = [str(a) for a in args if str(a) != "--"]
    found: dict = {}
    i = 0
    while i < len(words):
        name, eq, value = words[i].partition("=")
        i += 1
        if name not in options:
            continue
        dest, takes_value = options[name]
        if not takes_value:
            if eq:
                return {}
            found[dest] = True
        elif eq:
            found[dest] = value
        elif i < len(words):
            found[dest], i = words[i], i + 1
        else:
            return {}
    return found

# ---------------------------------------------------------------- the group and its one error handler


class BonusGroup(click.Group):
    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        args = list(sys.argv[1:] if args is None else args)
        ctx_globals: dict = {}
        self._last_globals = ctx_globals

        def flags():
            g = dict(_globals_in(args))
            g.update({k: v for k, v in ctx_globals.items() if k in ("json", "debug", "fmt")})
            return bool(g.get("json")) or g.get("fmt") == "json", bool(g.get("debug"))

        try:
            if any("\x00" in str(a) for a in args):
                raise model.BadInput("arguments cannot contain NUL bytes", "usage")
            rv = super().main(args=args, prog_name=prog_name or "bonuscli", complete_var=complete_var,
                              standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
            if code == 0:
                self._finish()
        except click.exceptions.Exit as e:
            code = e.exit_code
        except click.exceptions.NoArgsIsHelpError as e:  # pragma: no cover - click >= 8.2
            click.echo(e.ctx.get_help())
            code = 0
        except click.UsageError as e:
            msg = _usage_message(e)
            if e.ctx is not None:
                msg += f" (see `{e.ctx.command_path} --help`)"
            render.error(model.BadInput(msg, "usage"), flags()[0])
            code = 2
        except click.Abort:
            render.error(model.BonusError("interrupted", "interrupted"), flags()[0])
            code = 130
        except click.ClickException as e:
            render.error(model.BadInput(e.format_message(), "usage"), flags()[0])
            code = e.exit_code
        except model.BonusError as e:
            as_json = flags()[0]
            if getattr(e, "explain", False) and e.steps and not as_json:
                for step in e.steps:
                    render.warn(f"{step['rule']}: {step['detail']}")
            render.error(e, as_json)
            code = e.exit_code
        except BrokenPipeError:
            code = 0
        except KeyboardInterrupt:
            code = 130
        except OSError as e:
            as_json, debug = flags()
            if debug:
                raise
            render.error(model.FilesError(f"{e.strerror or e}: {e.filename or ''}".rstrip(": "), "disk"), as_json)
            code = 3
        except Exception as e:  # the promise: never a traceback
            as_json, debug = flags()
            if debug:
                raise
            found = self._corrupt_ledger(e)
            if found is not None:  # a line edited outside bonuscli, not a bug: say which
                render.error(found, as_json)
            else:
                render.error(model.BonusError(f"internal error ({type(e).__name__}: {e}); run again with --debug "
                                              "and report it", "internal"), as_json)
            code = 3
        if standalone_mode:
            sys.exit(code)
        return code

    def get_command(self, ctx, cmd_name):
        cmd = super().get_command(ctx, cmd_name)
        return with_globals(cmd) if cmd is not None else None

    def _corrupt_ledger(self, err):
        """When a command failed as no rule foresaw (a TypeError, KeyError...): the ledger line edited
        outside bonuscli that explains it, if there is one (`service.corrupt_ledger`), else None."""
        env = getattr(self, "_env", None)
        if env is None or not isinstance(err, (KeyError, TypeError, ValueError, IndexError, AttributeError,
                                                ArithmeticError)):
            return None
        try:
            return service_mod.corrupt_ledger(env.data_dir)
        except Exception:
            return None

    def _finish(self):
        env = getattr(self, "_env", None)
        if env is not None and env._service is not None:
            env._service.finish()

    def invoke(self, ctx):
        self._env = None
        self._last_globals.update(ctx.meta.get("globals", {}))
        try:
            return super().invoke(ctx)
        except OSError as e:
            # Caught here, before Click's own handler turns EPIPE into `sys.exit(1)`: a reader that went
            # away (`| head`) is not a refusal (CLI.md §2: exit 0, quietly). A write to a ledger has
            # already happened by the time a command prints, and `_finish` still runs.
            import errno

            if e.errno != errno.EPIPE:
                raise
            if not _stdout_gone():
                raise model.FilesError(f"broken pipe: {e.strerror or e}", "disk") from e
            _quiet_stdout()
            return 0
        finally:
            self._last_globals.update(ctx.meta.get("globals", {}))


def _usage_message(e: click.UsageError) -> str:
    """Click's message, on one clean line: a missing option or argument that takes one of a few
    values lists them as `(choose from: a, b)`, not as Click's tab-indented lines."""
    param = getattr(e, "param", None)
    if isinstance(e, click.MissingParameter) and param is not None and isinstance(param.type, click.Choice):
        choices = ", ".join(str(c) for c in param.type.choices)
        if isinstance(param, click.Option):
            return f"Missing option {param.get_error_hint(e.ctx)} (choose from: {choices})"
        return f"Missing argument '{(param.name or 'VALUE').upper()}' (choose from: {choices})"
    return e.format_message()


def _stdout_gone() -> bool:
    """Whether stdout is a pipe or socket whose reader has gone (an EPIPE that is stdout's, not, say,
    a worker's). Without a file descriptor to ask (tests' captured output), assume it is."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return True
    try:
        import select

        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # pragma: no cover - no poll on this platform
        return True


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so what is still buffered is dropped silently (at exit too, where
    Python would otherwise report the broken pipe on stderr)."""
    try:
        fd = sys.stdout.fileno()
        null = os.open(os.devnull, os.O_WRONLY)
    except (AttributeError, OSError, ValueError):
        return
    try:
        os.dup2(null, fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(null)


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
    """The console script: run one command, then leave without tearing down what it read."""
    global _ONE_SHOT
    _ONE_SHOT = True
    import gc

    gc.disable()  # one command, then exit: nothing lives long enough for the cycle collector to pay
    code = cli.main(prog_name="bonuscli", standalone_mode=False)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # the reader went away (`| head`): nothing more to say
        pass
    except OSError:
        code = code or 3
    os._exit(code if isinstance(code, int) else 0)


_ONE_SHOT = False  # True in the console script: the service may keep what it read until exit


def command(*args, **kw):
    """A subcommand that also takes the global options after its name (listed after its own; a
    command's own option of the same name, such as `export --format`, wins)."""

    def deco(f):
        cmd = cli.command(*args, **kw)(f)
        own_opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
        # made when the command is first resolved (BonusGroup.get_command): one command runs, so
        # building ~140 options for all of them at every start-up is wasted (docs/performance.md)
        cmd.pending_globals = [spec for spec in GLOBAL_SPECS if spec[0][0] not in own_opts]
        return cmd

    return deco


def with_globals(cmd):
    """`cmd` with its registry parameters and the global options after its own (made once, on first
    use)."""
    if any(isinstance(p, _RegistryParams) for p in cmd.params):
        cmd.params = [q for p in cmd.params for q in (p.make() if isinstance(p, _RegistryParams) else [p])]
    pending = getattr(cmd, "pending_globals", None)
    if pending:
        cmd.pending_globals = None
        cmd.params = cmd.params + [click.Option(decls, **attrs) for decls, attrs in pending]
    return cmd


# ---------------------------------------------------------------- shared plumbing


def emit(env: Env, view, human, rows=None, main=None, lines=False, known=None):
    """Print a command's result in the format asked: a table for people, JSON (`lines`: one object a
    line), or CSV/TSV: one flat table of the view (render.tables, CLI.md §1), the one `--table NAME`
    names, else `rows` (a table's name), else `main`, the table of the record itself (or of each record
    of a list; default: the command's name). `--table` also picks a table for people; JSON holds them all.
    `known`: the tables the view has even without their field (default: a writing command's, render.WRITES)."""
    ctx = click.get_current_context()
    command = ctx.command.name
    if callable(rows):  # the rows themselves, as the table
        view, rows = rows(view), None
    name = ctx.find_root().meta.get("globals", {}).get("table")
    picked = None
    if env.fmt in ("csv", "tsv") or name is not None:  # (with JSON, only to refuse an unknown name)
        picked = render.pick(view, main or command, name, rows, command,
                             render.WRITES.get(command, ()) if known is None else known)
    if env.fmt == "json":
        render.emit_json_lines(view) if lines else render.emit_json(view)
    elif env.fmt in ("csv", "tsv"):
        render.write_rows(*picked, delimiter="," if env.fmt == "csv" else "\t")
    elif name is not None:
        header, data = picked
        render.out(render.table([[render.printable(c) for c in r] for r in data], header))
    else:
        render.out(human(view))


def kv(view, keys):
    return render.pairs([(k, render.show(view.get(k))) for k in keys])


def steps_text(v) -> str:
    return "\n".join(f"{s['rule']}: {s['detail']}" for s in v.get("steps") or [])


class explaining:
    """Marks a refusal raised inside so the error handler prints its rule steps (--explain)."""

    def __init__(self, on: bool):
        self.on = on

    def __enter__(self):
        return self

    def __exit__(self, typ, exc, tb):
        if self.on and isinstance(exc, model.BonusError):
            exc.explain = True
        return False


def run_command(env, name: str, values: dict | None = None, /, dry_run: bool = False, explain: bool = False,
                **given):
    """A writing command as every entry point runs it: its request built from the values given
    (`commands.COMMANDS[name].build`, parsed by requests.py), decided and written by `Service.run`."""
    from bonuscli.commands import COMMANDS

    ctx = click.get_current_context(silent=True)
    table = ctx.find_root().meta.get("globals", {}).get("table") if ctx is not None else None
    if table is not None:  # parsed before --from was: a batch's table (`problems`) is no single write's
        render.check_write_table(table, name, batch=False)
    cmd = COMMANDS[name]
    values = dict(values or {}, **given)
    request = cmd.build(env.catalog, values, today_of(env) if cmd.dated else None)
    opts = {"explain": explain} if name == "earn" else {}
    return env.service.run(name, request, env.now, dry_run=dry_run, **opts)


def today_of(env):
    return env.now.date()  # `now` is in program time


# ---------------------------------------------------------------- completion


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


def complete_region(ctx, param, incomplete):
    """`--region`: the codes starting with what was typed (any case), then the codes of the regions whose
    name starts with it (`bry` offers RU-BRY): `requests.region_completions`. Never raises."""
    try:
        return rq.region_completions(env_of(ctx).catalog, incomplete)
    except Exception:
        return []


complete_reward = _completer(lambda env: env.catalog.rewards)
complete_category = _completer(lambda env: list(env.catalog.categories))
complete_reward_category = _completer(lambda env: env.catalog.reward_categories)
complete_phone = _completer(lambda env: importlib.import_module("bonuscli.ledger").FileStore(env.data_dir).phones())
complete_channel = _completer(lambda env: env.catalog.channels)
complete_method = _completer(lambda env: env.catalog.methods)


class _RegistryParams(click.Argument):
    """Where a writing command's parameters go among its own: a stand-in, replaced by the parameters
    made from the registry (`commands.COMMANDS[name].cli`) when the command is first resolved
    (`with_globals`), as the global options are: start-up imports no registry (`--version`,
    `balance` stay quick)."""

    def __init__(self, param_decls, registry: str = "", **attrs):
        super().__init__(param_decls, required=False)
        self.registry = registry

    def make(self) -> list:
        from bonuscli.commands import COMMANDS

        complete = {"phone": complete_phone, "region": complete_region, "method": complete_method,
                    "category": complete_category, "reward": complete_reward, "channel": complete_channel,
                    "gift": _complete_gift}
        out = []
        for p in COMMANDS[self.registry].cli:
            name = p.name or p.key
            if not p.option:
                out.append(click.Argument([name], required=p.required, metavar=p.metavar,
                                          shell_complete=complete.get(p.complete)))
            elif p.flag:
                out.append(click.Option([p.option, name], is_flag=True, help=p.help))
            else:
                out.append(click.Option([p.option, name], required=p.required, default=p.default,
                                        show_default=p.default is not None, help=p.help,
                                        shell_complete=complete.get(p.complete)))
        return out


def registry_params(name: str):
    """A writing command's Click parameters, from its declaration in the registry, here among the
    command's own (in `--help` order)."""

    return click.argument(f"registry_{name}", cls=_RegistryParams, registry=name)


def registry_values(name: str, given: dict) -> dict:
    """The values of a writing command from its Click parameters (by the registry's keys)."""
    from bonuscli.commands import COMMANDS

    return {p.key: given[p.name or p.key] for p in COMMANDS[name].cli}


def registry_labels(name: str, values: dict) -> dict:
    """The same values by what the command line calls them (PHONE, --category): for messages."""
    from bonuscli.commands import COMMANDS

    return {(p.option or p.metavar or p.key.upper()): values[p.key] for p in COMMANDS[name].cli}


# ---------------------------------------------------------------- catalog and check


@command("catalog")
@click.argument("code", required=False, shell_complete=complete_reward)
@click.option("--region", help="Show prices for this home region (a code, a name or its start).",
              shell_complete=complete_region)
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
    region = rq.region(cat, region) if region is not None else None
    if code is not None:
        doc = service_mod.reward_json(cat, cat.rewards[rq.reward(cat, code)], region)
        if region:
            doc["region"] = region
        emit(env, doc, lambda d: kv(d, [k for k in d]))
        return
    rows = service_mod.catalog_rows(cat, region, category, search, max_price, channel)
    if env.fmt != "table" or ctx.find_root().meta.get("globals", {}).get("table") is not None:
        emit(env, rows, None)
        return
    render.out(render.table(
        [[d["code"], d["name"], d["category"], render.show(d["price"]) if d["price"] is not None else "10/RUB",
          render.show(d["validity_days"]), d["activation"]["ussd"] or d["activation"]["sms"] or "-",
          ",".join(d["channels"])] for d in rows],
        ["code", "name", "category", f"price{' ' + region if region else ''}", "days", "activation", "channels"]))


@command("regions")
@click.pass_context
def regions_cmd(ctx):
    """List the home regions of the catalog (codes and names).

    \b
    bonuscli regions --json
    """
    env = env_of(ctx)
    rows = [{"code": c, "name": n} for c, n in env.catalog.regions.items()]
    emit(env, rows, lambda rs: render.table([[r["code"], r["name"]] for r in rs], ["code", "name"]))


@command("check")
@click.option("--ledgers", "ledgers", is_flag=True, help="Verify every ledger of the data directory.")
@click.option("--scenario", "scenario", is_flag=True, help="Run the scenario FILES given as arguments.")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--jobs", type=click.IntRange(min=1), help="With --ledgers: processes reading ledgers (default: the core count).")
@click.option("--engine", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="Where whole-directory work runs: this machine's processes, or a Dask cluster.")
@click.option("--scheduler", metavar="ADDRESS", help="With --engine dask: a running scheduler (default: a local cluster).")
@click.option("--save-anchor", "save_anchor", type=click.Path(dir_okay=False),
              help="With --ledgers: write the directory's anchor (each ledger's line count and chain hash) here.")
@click.option("--anchor", "anchor_file", type=click.Path(dir_okay=False),
              help="With --ledgers: check the directory against an anchor saved earlier.")
@click.option("--anchor-digest", "anchor_digest", metavar="HEX",
              help="With --anchor: refuse it unless its digest is HEX (the one --save-anchor printed).")
@click.option("--allowed-signers", "allowed_signers", type=click.Path(dir_okay=False),
              help="With --anchor: refuse it unless FILE.sig is a valid signature by a key listed here.")
@click.option("--sign-key", "sign_key", type=click.Path(dir_okay=False),
              help="With --save-anchor: sign the anchor with this OpenSSH private key (to FILE.sig).")
@click.pass_context
def check_cmd(ctx, ledgers, scenario, files, jobs, engine, scheduler, save_anchor, anchor_file, anchor_digest,
              allowed_signers, sign_key):
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
        ctx.exit(run_scenarios(env, files, engine, scheduler))
    from bonuscli import catalog as catalog_mod

    shown = env.shown_catalog
    try:
        _cat, probs = catalog_mod.validate(env.catalog_path, shown)
    except model.FilesError as e:
        raise env._catalog_error(e)  # a --catalog PATH that leads nowhere: bad input (exit 2)
    if probs:
        if env.as_json:
            render.emit_json({"valid": False, "catalog": shown,
                              "problems": [{"path": p.path, "line": p.line, "message": p.message} for p in probs]})
        for p in probs:
            render.warn(str(p))
        raise model.FilesError(f"{shown}: {len(probs)} problem{'s' if len(probs) != 1 else ''} in the catalog",
                               "catalog-invalid")
    if (save_anchor or anchor_file) and not ledgers:
        raise model.BadInput("--save-anchor and --anchor go with --ledgers", "usage")
    if (anchor_digest or allowed_signers) and not anchor_file:
        raise model.BadInput("--anchor-digest and --allowed-signers check an anchor: give --anchor FILE", "usage")
    if sign_key and not save_anchor:
        raise model.BadInput("--sign-key signs the anchor written by --save-anchor FILE", "usage")
    digest, summary = None, None
    if ledgers:
        from bonuscli import audit

        env.catalog_cache = False  # the catalog as parsed: the cache is one of the files checked
        svc = env.service
        svc.require_data()
        anchor_doc = previous = None
        if anchor_file is not None:
            anchor_doc = anchor_checked(anchor_file, anchor_digest, allowed_signers)
            previous = audit.anchor_digest(anchor_doc)
        if engine == "dask":
            from bonuscli import dask_engine

            dask_engine.VERBOSE = env.debug  # library log lines only with --debug
            summary = dask_engine.check_dir_summary(svc, env.now, scheduler=scheduler)
        else:
            summary = audit.check_dir_summary(svc, env.now, jobs)
        problems = summary["problems"]
        problems = problems + audit.check_catalog_cache(svc)
        if anchor_doc is not None:
            problems = audit.check_anchor(svc, anchor_doc, anchor_file) + problems
        if not problems and save_anchor is not None:
            doc = audit.anchor(svc, previous)
            write_file(save_anchor, render.dumps(doc) + "\n")
            digest = doc["digest"]
            if sign_key:
                from pathlib import Path

                from bonuscli import signing

                signing.sign(Path(save_anchor), Path(sign_key))
        if problems:
            if env.as_json:
                render.emit_json({"valid": False, "problems": problems})
            for p in problems:
                render.warn(p["text"])
            derived = all(p.get("kind") == audit.DERIVED_FORGED for p in problems)
            raise model.FilesError(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in the "
                                   f"{'derived files' if derived else 'ledgers'} of {env.data_dir}"
                                   + (" (deleting them is safe)" if derived else ""),
                                   audit.DERIVED_FORGED if derived else "ledger-unsound")
    counts = {k: summary[k] for k in ("ledgers", "events", "repairs")} if summary is not None else {}
    if env.as_json:
        render.emit_json(dict({"valid": True, "catalog": shown}, **counts, **({"anchor": digest} if digest else {})))
        return
    if summary is not None:
        n = len(summary["repairs"])
        render.out(f"{summary['ledgers']} ledgers, {summary['events']} events, {n} repair{'s' if n != 1 else ''}, "
                   "0 problems")
    if digest:
        render.out(f"anchor {digest} saved to {save_anchor}" + (f" (signed: {save_anchor}.sig)" if sign_key else ""))


def anchor_checked(path: str, digest: str | None, signers: str | None) -> dict:
    """The anchor at `path`, its own authenticity checked first when the operator gave the means: its
    digest (`--anchor-digest`) and/or its signature (`--allowed-signers`); without either, a warning."""
    from pathlib import Path

    from bonuscli import audit

    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise model.BadInput(f"no such anchor file: {path}", "no-file")
    except OSError as e:
        raise model.FilesError(f"{path}:1: cannot read the anchor ({e.strerror or e})", "anchor-invalid")
    if signers:
        from bonuscli import signing

        signing.verify(data, Path(path + ".sig"), Path(signers), path)
    doc = audit.read_anchor(data, path)
    if digest:
        got = audit.anchor_digest(doc)
        if got is None or got != digest.strip().lower():
            raise model.FilesError(f"{path}: this anchor's digest is {got or 'not computable'}, not the {digest.strip()} "
                                   "you kept: it was changed or replaced (it cannot vouch for the ledgers)",
                                   "anchor-forged")
    if not digest and not signers:
        render.warn("warning: the anchor's own authenticity was not checked: anyone who can write the data "
                    "directory can rewrite it too; give --anchor-digest HEX (kept elsewhere) or "
                    "--allowed-signers FILE")
    return doc


def write_file(path, text: str) -> None:
    """Write a file the user named, whole or not at all."""
    import tempfile
    from pathlib import Path

    target = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".bonuscli-", dir=str(target.parent) or ".")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as e:
        raise model.FilesError(f"cannot write {path}: {e.strerror or e}", "disk")


def run_scenarios(env, files, engine, scheduler) -> int:
    """`check --scenario FILE...`: 0 all pass, 1 an expectation failed, 3 a file is invalid."""
    from bonuscli import scenario as scenario_mod

    if engine == "dask":
        from bonuscli import dask_engine

        dask_engine.VERBOSE = env.debug  # library log lines only with --debug
        results = dask_engine.run_scenarios([str(f) for f in files], env.catalog_path, scheduler=scheduler)
    else:
        results = [scenario_mod.run_one(str(f), env.catalog_path) for f in files]
    failed = [r for r in results if r.status == "fail"]
    invalid = [r for r in results if r.status == "invalid"]
    if env.as_json:
        render.emit_json(scenario_mod.results_json(results))
    else:
        render.out(scenario_mod.human(results))
    for r in invalid:
        for p in r.problems:
            render.warn(str(p))
    if invalid:
        n = len(invalid)
        render.error(model.FilesError(f"{n} scenario file{'s are' if n != 1 else ' is'} invalid (see the "
                                      "file:line lines above)", "scenario-invalid"), env.as_json)
        return 3
    if failed:
        n = sum(len(r.failures) for r in failed)
        render.error(model.Refused(f"{len(failed)} of {len(results)} scenarios failed ({n} expectation"
                                   f"{'s' if n != 1 else ''} not met)", "scenario-failed"), env.as_json)
        return 1
    return 0


# ---------------------------------------------------------------- members


@command("join")
@click.option("--explain", is_flag=True, help="On a refusal, show the rule and the numbers that refused it.")
@registry_params("join")
@click.option("--from", "from_file", type=click.Path(dir_okay=False, allow_dash=True),
              help="Batch: a CSV (phone,region[,method,email,birth_date,customer_since,referrer,services,at]) "
                   "or JSON-lines file, - for stdin.")
@click.option("--dry-run", is_flag=True, help="Batch: decide every row without writing.")
@click.option("--jobs", type=click.IntRange(min=1), help="Batch: processes to spread members over (default: the core count).")
@click.pass_context
def join_cmd(ctx, explain, from_file, dry_run, jobs, **given):
    """Join the program; welcome points are credited at activation (or a whole file with --from).

    \b
    bonuscli join '+7 916 123-45-67' --region RU-MOW --method web --email a@b.ru --birth-date 1990-01-01
    bonuscli join --from members.csv --json
    """
    env = env_of(ctx)
    values = registry_values("join", given)
    if from_file is not None:
        from bonuscli.commands import COMMANDS

        defaults = {p.key: p.default for p in COMMANDS["join"].cli}
        from_batch(ctx, env, from_file, "join", "joining", jobs,
                   {k: v for k, v in registry_labels("join", values).items()
                    if v is not None and v != defaults.get(k.lstrip("-").replace("-", "_"))}, dry_run)
    if dry_run:
        raise model.BadInput("--dry-run goes with --from FILE (a single join is decided as it is written)", "usage")
    if values["phone"] is None:
        raise model.BadInput("join needs PHONE (or --from FILE)", "usage")
    with explaining(explain):
        view = run_command(env, "join", values)
    emit(env, view, human_join)


def human_join(v):
    return kv(v, ["phone", "region", "method", "status", "joined_at", "active_from", "customer_since", "balance"]) + (
        "\n\n" + render.table([[w["reason"], w["points"]] for w in v["welcome"]], ["welcome", "points"])
        if v["welcome"] else "\n\nwelcome         - (this phone was a member before)")


@command("balance")
@click.argument("phone", shell_complete=complete_phone)
@click.pass_context
def balance_cmd(ctx, phone):
    """Show a member's points, status, gifts and active rewards.

    \b
    bonuscli balance 9161234567
    """
    env = env_of(ctx)
    emit(env, env.service.balance(rq.phone(phone), env.now), human_balance)


def human_balance(v):
    text = kv(v, ["phone", "region", "status", "available", "held_out", "debt", "next_expiry", "coefficient",
                  "customer_since"])
    if v["pending_in"]:
        text += "\n\n" + render.table([[g["gift_id"], g["from"], g["points"], g["deadline"]] for g in v["pending_in"]],
                                      ["gift", "from", "points", "accept before"])
    if v["active_rewards"]:
        text += "\n\n" + render.table([[r["code"], r["name"], r["active_until"]] for r in v["active_rewards"]],
                                      ["reward", "name", "active until"])
    return text


class _HistoryTypeOption(click.Option):
    """`history --type`: its help lists the types and families of `requests.history_types`, read only
    when the help is shown (start-up does not import requests)."""

    def get_help_record(self, ctx):
        self.help = (f"Only rows of these comma-separated types ({', '.join(rq.HISTORY_TYPES)}) or families "
                     f"(a family is all its types: {rq.history_families_text()}).")
        return super().get_help_record(ctx)


@command("history")
@click.argument("phone", shell_complete=complete_phone)
@click.option("--from", "from_date", help="Only rows on or after this date (YYYY-MM-DD, or a month YYYY-MM or year "
              "YYYY from its first day; program time).")
@click.option("--until", "until_date", help="Only rows on or before this date (a month or year: up to its last day).")
@click.option("--type", "types", cls=_HistoryTypeOption, help="Only rows of these comma-separated types or families.",
              shell_complete=_completer(lambda env: rq.HISTORY_TYPES + tuple(rq.HISTORY_FAMILIES)))
@click.pass_context
def history_cmd(ctx, phone, from_date, until_date, types):
    """List a member's events oldest first, with the running balance (JSON lines with --json).

    \b
    bonuscli history 9161234567 --from 2025-01-01 --type earn,redeem --format csv
    """
    env = env_of(ctx)
    lo, hi = (d.isoformat() if d else None for d in rq.date_range(from_date, until_date))
    wanted = rq.history_types(types) if types is not None else None
    rows = [r for r in env.service.history(rq.phone(phone), env.now)
            if (lo is None or r["at"][:10] >= lo) and (hi is None or r["at"][:10] <= hi)
            and (wanted is None or r["type"] in wanted)]
    emit(env, rows, lambda rs: render.table(  # "type": the same column as in JSON and CSV ("event" is the line's id)
        [[r["at"], r["type"], f"{r['points']:+d}" if r["points"] else "0", r["balance"],
          render.printable(r["detail"]) + (f" ({r['debt_repaid']} repaid debt)" if r.get("debt_repaid") else "")]
         for r in rs], ["at", "type", "points", "balance", "detail"]), lines=True)


@command("leave")
@registry_params("leave")
@click.option("--yes", is_flag=True, help="Confirm: every point is forfeited and cannot be restored.")
@click.pass_context
def leave_cmd(ctx, yes, **given):
    """Leave the program, forfeiting every point (needs --yes).

    \b
    bonuscli leave 9161234567 --yes
    """
    env = env_of(ctx)
    values = registry_values("leave", given)
    rq.phone(values["phone"])  # a bad phone is exit 2 before the missing --yes
    if not yes:
        raise model.BadInput("leaving forfeits every point and cannot be undone; add --yes to confirm", "confirm")
    emit(env, run_command(env, "leave", values), lambda v: kv(v, ["phone", "status", "forfeited", "left_at"]))


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
        view["ledger"] = str(paths.ledger_path(env.data_dir, rq.phone(phone)))
    emit(env, view, lambda v: kv(v, list(v)))


# ---------------------------------------------------------------- earning


def earn_human(v):
    text = kv(v, ["phone", "amount", "category", "points", "coefficient", "rub_per_point", "duplicate", "balance"]
              + (["debt_repaid", "debt"] if v.get("debt_repaid") or v.get("debt") else []))
    for b in v.get("bonuses", ()):
        text += f"\nbonus          {b['reason']} +{b['points']}"
    if v.get("dry_run"):
        text += "\n(dry run: nothing was written)"
    return text


def with_steps(human, explain):
    return lambda v: human(v) + ("\n\n" + steps_text(v) if explain else "")


@command("earn", context_settings={"ignore_unknown_options": True})
@registry_params("earn")
@click.option("--dry-run", is_flag=True, help="Compute without writing.")
@click.option("--explain", is_flag=True, help="Show each rule applied (also on a refusal).")
@click.option("--from", "from_file", type=click.Path(dir_okay=False, allow_dash=True),
              help="Batch: a CSV (phone,amount,category,ref[,at,spent_at]) or JSON-lines file, - for stdin.")
@click.option("--jobs", type=click.IntRange(min=1), help="Batch: processes to spread members over (default: the core count).")
@click.pass_context
def earn_cmd(ctx, dry_run, explain, from_file, jobs, **given):
    """Record a spending and credit its points (or a whole batch with --from).

    \b
    bonuscli earn 9161234567 500 --category mobile --ref tx-1001
    bonuscli earn --from payments.csv --json
    """
    env = env_of(ctx)
    values = registry_values("earn", given)
    if from_file is not None:
        from_batch(ctx, env, from_file, "earn", "earning", jobs, registry_labels("earn", values), dry_run)
    if values["phone"] is None or values["amount"] is None:
        raise model.BadInput("earn needs PHONE and AMOUNT (or --from FILE)", "usage")
    if values["category"] is None:
        raise model.BadInput("earn needs --category (e.g. mobile, card, taxi)", "usage")
    with explaining(explain):
        view = run_command(env, "earn", values, dry_run=dry_run, explain=explain)
    if explain:
        view["steps"] = view.get("_steps") or []
    emit(env, view, with_steps(earn_human, explain))


def from_batch(ctx, env, source, kind, title, jobs, given: dict, dry_run=False):
    """Run a `--from FILE` batch and exit with its code; the per-row values must come from the file."""
    if any(v is not None for v in given.values()):
        raise model.BadInput(f"--from takes no {', '.join(given)}: they come from the file", "usage")
    table = ctx.find_root().meta.get("globals", {}).get("table")
    if table is not None:  # a batch's tables are its summary and its problems: checked before any row is read
        render.check_write_table(table, kind, batch=True)
    from bonuscli import batch

    svc = env.service
    if kind not in ("adjust", "join"):  # joins and opening-balance imports may start a data directory
        svc.require_data()
    bar = None
    if sys.stderr.isatty():
        bar = click.progressbar(length=0, label=title, file=sys.stderr)

    def progress(done, total):
        if bar is not None:
            bar.length = total
            bar.update(done)

    stream = getattr(sys.stdin, "buffer", sys.stdin) if source == "-" else None  # only the CLI reads stdin
    summary = batch.run(svc, source, kind, env.now, dry_run, jobs, progress, stream)
    if bar is not None:
        bar.render_finish()
    counts = {k: summary[k] for k in ("rows", "applied", "duplicates", "refused", "errors")}
    problems = summary["problems"]
    try:  # a record (`summary`, flat with `problems_count`) and its table `problems` (render.BATCH_TABLES)
        emit(env, summary, lambda _: render.pairs([(k, str(v)) for k, v in counts.items()]) + (
            "\n\n" + render.table([[p["line"], render.printable(p["ref"] or "-"), p["code"],
                                    render.printable(p["message"])] for p in problems],
                                  ["line", "ref", "code", "problem"]) if problems else ""), main="summary", known=())
        sys.stdout.flush()
    except BrokenPipeError:  # the summary's reader went away: the batch's exit code still tells
        if not _stdout_gone():
            raise
        _quiet_stdout()
    code = batch.exit_code(summary)
    if code:
        kind_slug = {3: "files", 2: "bad-rows", 1: "refused-rows"}[code]
        first = next((p for p in problems if p["code"] == code), problems[0])
        unwritten = sum(1 for p in problems if p["code"] == 3)
        what = (f"{unwritten} not written (the files are in trouble), " if unwritten else "") + \
            f"{counts['errors'] - unwritten} malformed and {counts['refused']} refused of {counts['rows']} rows"
        render.error(model.EXIT_CLASSES[code](f"{what} (line {first['line']}: {first['message']})", kind_slug),
                     env.as_json)
    ctx.exit(code)


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
    with explaining(explain):
        view = service_mod.calc(env.catalog, env.now, amount, category, tenure_months, customer_since,
                                card_last_month)
    if explain:
        view["steps"] = view["_steps"]
    emit(env, view, with_steps(lambda v: kv(v, ["amount", "category", "rub_per_point", "coefficient", "points"]),
                               explain))


# ---------------------------------------------------------------- forecast and redeem


@command("forecast")
@click.argument("phone", shell_complete=complete_phone)
@click.option("--days", type=click.IntRange(min=0, max=36600), help="Window of N days from today (default 30).")
@click.option("--until", "until", help="Window up to and including this date (YYYY-MM-DD, or a month YYYY-MM or year YYYY: its last day).")
@click.pass_context
def forecast_cmd(ctx, phone, days, until):
    """Show the points that expire soon (SMS PROGNOS), and a chart of the months ahead.

    \b
    bonuscli forecast 9161234567 --days 60
    """
    env = env_of(ctx)
    if days is not None and until is not None:
        raise model.BadInput("give --days or --until, not both", "usage")
    until_d = rq.period_bound(until, "--until", end=True) if until else None
    emit(env, env.service.forecast(rq.phone(phone), env.now, days, until_d), human_forecast, "lots")


def human_forecast(v):
    text = render.table([[lot["expires_on"], lot["points"]] for lot in v["lots"]], ["expires on", "points"])
    text += f"\n\ntotal {v['total']} points expiring up to {v['until']}\n\nmonths ahead:\n"
    text += render.bars([(m["month"], m["points"]) for m in v["months"]])
    return text


@command("redeem")
@click.option("--explain", is_flag=True, help="On a refusal, show the rule and the numbers that refused it.")
@registry_params("redeem")
@click.pass_context
def redeem_cmd(ctx, explain, **given):
    """Order a reward, paying its price for the member's region in points.

    \b
    bonuscli redeem 9161234567 minutes_30
    bonuscli redeem 9161234567 store_discount --via store --price 1999.90
    """
    env = env_of(ctx)
    values = registry_values("redeem", given)
    if ctx.get_parameter_source("via") == click.core.ParameterSource.DEFAULT:
        values["via"] = None  # not typed: requests.redeem applies the default and remembers it was not given
    with explaining(explain):
        view = run_command(env, "redeem", values)
    emit(env, view, human_redeem)


def human_redeem(v):
    return kv(v, [k for k in ("phone", "code", "name", "points_spent", "balance", "active_until", "voucher",
                              "price_rub", "discount_rub", "to_pay_rub") if k in v])


# ---------------------------------------------------------------- gifts


@command("gift", context_settings={"ignore_unknown_options": True})
@click.option("--explain", is_flag=True, help="On a refusal, show the rule and the numbers that refused it.")
@registry_params("gift")
@click.pass_context
def gift_cmd(ctx, explain, **given):
    """Offer points to another member of the same region; they have 30 days to accept.

    \b
    bonuscli gift 9161234567 9167654321 100
    """
    env = env_of(ctx)
    with explaining(explain):
        view = run_command(env, "gift", registry_values("gift", given))
    emit(env, view, lambda v: kv(v, ["gift_id", "from", "to", "points", "offered_at", "deadline", "balance"]))


def _complete_gift(ctx, param, incomplete):
    try:
        env = env_of(ctx)
        phone = ctx.params.get("phone")
        if not phone:
            return []
        doc = env.service.balance(rq.phone(phone), env.now)
        return [g["gift_id"] for g in doc["pending_in"] if g["gift_id"].startswith(incomplete)]
    except Exception:
        return []


@command("accept")
@registry_params("accept")
@click.pass_context
def accept_cmd(ctx, **given):
    """Accept (or --reject) a pending gift.

    \b
    bonuscli accept 9167654321 gk3m9pq
    """
    env = env_of(ctx)
    view = run_command(env, "accept", registry_values("accept", given))
    emit(env, view, lambda v: kv(v, ["gift_id", "status", "points"] + (["expired"] if v.get("expired") else [])
                                 + ["balance"] + (["debt_repaid", "debt"] if v.get("debt_repaid") or v.get("debt") else [])))


# ---------------------------------------------------------------- the operator's channels


def _operator(env, phone, text, region, kind):
    doc, error = env.service.operator(phone, text, region, kind, env.now)
    if env.as_json:
        render.emit_json(doc)
    else:
        render.out(render.printable(doc["reply"]))
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
@click.option("--changed-only", "changed_only", is_flag=True,
              help="With --ledgers or --scenario: list only the members whose available points change "
                   "(the total still counts every member).")
@click.option("--engine", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="Where whole-directory work runs: this machine's processes, or a Dask cluster.")
@click.option("--scheduler", metavar="ADDRESS", help="With --engine dask: a running scheduler (default: a local cluster).")
@click.option("--jobs", type=click.IntRange(min=1),
              help="With --ledgers or --scenario: processes replaying members (default: the core count).")
@click.pass_context
def diff_cmd(ctx, old, new, ledgers, scenario, fail_on, changed_only, engine, scheduler, jobs):
    """What changed between two catalogs, and what it does to members.

    \b
    bonuscli diff catalog.yaml new-catalog.yaml --ledgers --fail-on price-increase
    """
    from bonuscli import diff as diff_mod

    env = env_of(ctx)
    kinds = [k.strip() for k in fail_on.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in diff_mod.KINDS]
    if unknown:
        raise model.BadInput(f"--fail-on: unknown change kind {', '.join(unknown)} (kinds: {', '.join(diff_mod.KINDS)})",
                             "usage")
    if ledgers and scenario:
        raise model.BadInput("give --ledgers or --scenario FILE, not both", "usage")
    if changed_only and not (ledgers or scenario):
        raise model.BadInput("--changed-only filters the members of an impact: give --ledgers or --scenario FILE "
                             "with it", "usage")
    old_cat, new_cat = diff_mod.load_catalog(old, render.warn), diff_mod.load_catalog(new, render.warn)
    doc = {"old": old, "new": new, "changes": diff_mod.changes(old_cat, new_cat)}
    if ledgers or scenario:
        if scenario:
            files, times = diff_mod.scenario_ledgers(scenario, old, render.warn)
            at_text = env.at_text or max(times, key=lambda t: rq.when(t, old_cat.tz))
        else:
            files, at_text = None, env.at_text
        import datetime

        now = rq.when(at_text, old_cat.tz) if at_text else datetime.datetime.now(old_cat.tz).replace(microsecond=0)
        if files is None:
            svc = env.service
            svc.require_data()
            if engine == "dask":
                from bonuscli import dask_engine

                dask_engine.VERBOSE = env.debug  # library log lines only with --debug
                doc["impact"] = dask_engine.impact(old_cat, new_cat, env.data_dir, now, scheduler=scheduler,
                                                   warn=render.warn)
            else:
                doc["impact"] = diff_mod.impact_dir(old_cat, new_cat, svc.store, now, jobs=jobs, warn=render.warn)
        else:
            doc["impact"] = diff_mod.impact(old_cat, new_cat, files, now, jobs=jobs)
        if changed_only:
            doc["impact"] = diff_mod.changed_only(doc["impact"])
    found = [k for k in kinds if any(c["kind"] == k for c in doc["changes"])]
    doc["failed_on"] = found
    emit(env, doc, diff_mod.human, "members" if "impact" in doc else "changes", main="summary")
    if found:
        n = sum(1 for c in doc["changes"] if c["kind"] in found)
        render.error(model.Refused(f"{n} change{'s' if n != 1 else ''} of a kind named in --fail-on: "
                                   f"{', '.join(found)}", "fail-on"), env.as_json)
        ctx.exit(1)


# ---------------------------------------------------------------- corrections and explanations


@command("refund")
@registry_params("refund")
@click.option("--from", "from_file", type=click.Path(dir_okay=False, allow_dash=True),
              help="Batch: CSV (phone,ref,amount,refund_ref[,at]) or JSON lines, - for stdin.")
@click.option("--jobs", type=click.IntRange(min=1), help="Batch: processes to spread members over (default: the core count).")
@click.option("--explain", is_flag=True, help="Show how the points taken back were computed.")
@click.pass_context
def refund_cmd(ctx, from_file, explain, jobs, **given):
    """Take back the points of a refunded spending (recorded with earn --ref REF).

    \b
    bonuscli refund 9161234567 tx-1001 --amount 200 --ref rf-1
    """
    env = env_of(ctx)
    values = registry_values("refund", given)
    if from_file is not None:
        from_batch(ctx, env, from_file, "refund", "refunding", jobs, registry_labels("refund", values))
    if values["phone"] is None or values["ref"] is None:
        raise model.BadInput("refund needs PHONE and REF (or --from FILE)", "usage")
    with explaining(explain):
        view = run_command(env, "refund", values)
    if explain:
        view["steps"] = view.get("_steps", [])
    emit(env, view, with_steps(lambda v: kv(v, ["phone", "ref", "amount", "points", "points_taken", "debt",
                                                "not_recovered", "duplicate", "balance"]), explain))


@command("adjust", context_settings={"ignore_unknown_options": True})
@registry_params("adjust")
@click.option("--from", "from_file", type=click.Path(dir_okay=False, allow_dash=True),
              help="Batch: CSV (phone,points,reason,ref[,expires_on,region,at]) or JSON lines, - for stdin.")
@click.option("--jobs", type=click.IntRange(min=1), help="Batch: processes to spread members over (default: the core count).")
@click.pass_context
def adjust_cmd(ctx, from_file, jobs, **given):
    """An operator's credit (+POINTS) or debit (-POINTS), always with a reason.

    \b
    bonuscli adjust 9161234567 200 --reason "goodwill: outage 2025-03-01" --ref ticket-77
    bonuscli adjust 9161234567 -50 --reason "duplicate credit"
    """
    env = env_of(ctx)
    values = registry_values("adjust", given)
    if from_file is not None:
        from_batch(ctx, env, from_file, "adjust", "adjusting", jobs,
                   {k: v for k, v in registry_labels("adjust", values).items() if k != "--expires-on"})
    if values["phone"] is None or values["points"] is None:
        raise model.BadInput("adjust needs PHONE and POINTS (or --from FILE)", "usage")
    view = run_command(env, "adjust", values)
    emit(env, view, lambda v: kv(v, ["phone", "points", "reason", "duplicate", "balance"]
                                 + (["debt_repaid", "debt"] if v.get("debt_repaid") or v.get("debt") else [])))


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
    view = env.service.explain(rq.phone(phone), env.now, key)
    emit(env, view, lambda v: render.printable_lines(steps_text(v)), "steps")


@command("report")
@click.option("--region", help="Only members of this home region (a code, a name or its start).",
              shell_complete=complete_region)
@click.option("--from", "from_date", help="First date of the monthly figures (YYYY-MM-DD, YYYY-MM or YYYY: its first day).")
@click.option("--until", "until_date", help="Last date of the monthly figures (YYYY-MM-DD, YYYY-MM or YYYY: its last day).")
@click.option("--jobs", type=click.IntRange(min=1), help="Processes reading ledgers (default: the core count).")
@click.option("--engine", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="Where whole-directory work runs: this machine's processes, or a Dask cluster.")
@click.option("--scheduler", metavar="ADDRESS", help="With --engine dask: a running scheduler (default: a local cluster).")
@click.pass_context
def report_cmd(ctx, region, from_date, until_date, jobs, engine, scheduler):
    """Program-wide figures over the data directory as of --at.

    With --from/--until, the reconciliation is the period's own: the balance at its start plus its
    flows is the balance at its end (JSON: `period`).

    \b
    bonuscli report --region RU-MOW --from 2025-01-01 --json
    """
    from bonuscli import fleet

    env = env_of(ctx)
    svc = env.service
    region = rq.region(svc.catalog, region) if region is not None else None
    f, u = rq.date_range(from_date, until_date)
    svc.require_data()
    if engine == "dask":
        from bonuscli import dask_engine

        dask_engine.VERBOSE = env.debug  # library log lines only with --debug
        view = dask_engine.report(svc, env.now, region, f, u, scheduler=scheduler)
    else:
        view = fleet.report(svc, env.now, region, f, u, jobs)
    emit(env, view, fleet.human, "months", main="summary")


@command("export")
@click.option("--format", "dialect", type=click.Choice(["hledger", "beancount"]), required=True,
              help="The journal's dialect.")
@click.option("--region", help="Only members of this home region (a code, a name or its start).",
              shell_complete=complete_region)
@click.option("--jobs", type=click.IntRange(min=1), help="Processes reading ledgers (default: the core count).")
@click.pass_context
def export_cmd(ctx, dialect, region, jobs):
    """The program's points as a plain-text accounting journal (hledger or beancount) as of --at.

    \b
    bonuscli export --format beancount > points.beancount && bean-check points.beancount
    """
    from bonuscli import export

    env = env_of(ctx)
    text = export.journal(env.service, env.now, dialect, region, jobs)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
