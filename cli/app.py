"""The `trainledger` application: the root group, its sessions, and its exit codes.

This is the composition root: a `Session` opens the ledger on the store URL,
once, on first use, and hands it to each verb. The verbs live in the
`*_commands` modules, which import this one and register themselves on its
groups; `cli.main` imports them all. No rule lives here.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import click
from eventsourcing.domain import EventSourcingError

from trainledger.adapters.store import DEFAULT_STORE, STORE_ENV, open_ledger
from trainledger.cli import output
from trainledger.domain.errors import LedgerError
from trainledger.service.ledger import TrainingLedger
from trainledger.service.queries import ID_KINDS, parse_moment

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

ACTOR_ENV = "TRAINLEDGER_ACTOR"

# The exit codes of the CLI contract. Domain errors carry none: what a refusal
# means to a shell is the CLI's to say.
ERROR_EXIT = 1
"""Refused by a rule, not found, invalid input (every `LedgerError`), or a failed command."""
USAGE_EXIT = 2
INTEGRITY_EXIT = 3
"""`verify` found an integrity failure."""
INTERRUPTED_EXIT = 130
"""Ctrl-C (SIGINT), as shells report it: 128 + 2."""


class Stopped(KeyboardInterrupt):
    """Raised on SIGTERM: stops a command like Ctrl-C does, but exits 1, not 130."""


@dataclass
class Session:
    """Global options and the ledger, opened on first use."""

    store: str
    json_mode: bool
    actor: str
    _ledger: TrainingLedger | None = field(default=None, repr=False)

    @property
    def ledger(self) -> TrainingLedger:
        if self._ledger is None:
            context = click.get_current_context(silent=True)
            writes = context is not None and records(context.command)
            self._ledger = open_ledger(self.store, create=writes)
        return self._ledger

    def emit(self, document: Any, text: Callable[[Any], Any], *, short_ids: bool = False) -> None:
        """Print the document, or its text; `short_ids`: with ids shortened as in a table."""
        if short_ids and not self.json_mode:
            ids = output.ids_in(document)
            document = output.with_ids(document, self.ledger.queries.short_ids(ids))
        output.emit(self.json_mode, document, text)


pass_session = click.make_pass_decorator(Session)

RECORDING_VERBS = frozenset({"import"})
"""Verbs that record without an idempotency key; every other one that records takes one."""


def records(command: click.Command) -> bool:
    """Whether a verb records events, and so may create its store (queries never do)."""
    return command.name in RECORDING_VERBS or any(
        parameter.name == "idempotency_key" for parameter in command.params
    )


idempotency_option = click.option(
    "--idempotency-key",
    metavar="K",
    default=None,
    help="Repeat-safe key: a repeat returns the first outcome and records nothing.",
)


def _parse_as_of(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    return None if value is None else parse_moment(value)


as_of_option = click.option(
    "--as-of",
    "as_of",
    metavar="TIMESTAMP",
    default=None,
    callback=_parse_as_of,
    help="Answer as it was then (ISO-8601 with a time zone, e.g. 2025-01-31T12:00:00Z).",
)


def default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


STORE_HELP = (
    f"The ledger (env {STORE_ENV}): sqlite:///path.db, sqlite:////abs/path.db, "
    "postgresql://user:pass@host:port/db or memory://."
)
JSON_HELP = "Print one JSON document (full ids, exact text)."
ACTOR_HELP = f"Who is acting (env {ACTOR_ENV}; default: the OS user)."


def _set_on_session(attribute: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    """A global option given after the verb: it overrides the one given (or not) before."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        session = ctx.find_object(Session)
        if session is not None and value not in (None, False):
            setattr(session, attribute, value)

    return callback


def _global_options_after_the_verb() -> list[click.Parameter]:
    # Eager, so they are set before an id argument opens the ledger to resolve itself.
    options: list[tuple[list[str], str, str, dict[str, Any]]] = [
        (["--store"], "store", STORE_HELP, {"metavar": "URL"}),
        (["--json", "json_mode"], "json_mode", JSON_HELP, {"is_flag": True, "default": None}),
        (["--actor"], "actor", ACTOR_HELP, {"metavar": "NAME"}),
    ]
    return [
        click.Option(
            flags,
            expose_value=False,
            is_eager=True,
            callback=_set_on_session(field),
            help=help_text,
            **settings,
        )
        for flags, field, help_text, settings in options
    ]


class LedgerGroup(click.Group):
    """A group whose verbs also take the global options, and which, bare, prints its help.

    As with gh, git and docker: `trainledger run list --json` is `trainledger
    --json run list`, and `trainledger run` shows what `run` can do (exit 0).
    """

    group_class = type  # subgroups are LedgerGroups too

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        names = {p.name for p in cmd.params}
        cmd.params += [p for p in _global_options_after_the_verb() if p.name not in names]
        super().add_command(cmd, name)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args and not ctx.resilient_parsing:
            click.echo(ctx.get_help())
            ctx.exit(0)
        return super().parse_args(ctx, args)


if TYPE_CHECKING:  # click's ParamType is generic in its stubs from 8.2 on
    _TextType = click.ParamType[str]
else:
    _TextType = click.ParamType


class LedgerId(_TextType):
    """A run or checkpoint id, or a unique prefix of one (resolved from the views).

    Ids complete in the shell from the views of the store given before the verb.
    """

    name = "id"

    def __init__(self, *kinds: str) -> None:
        self.kinds = kinds or ID_KINDS

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        session = None if ctx is None else ctx.find_object(Session)
        if session is None or not isinstance(value, str):
            return str(value)
        return session.ledger.queries.resolve_id(value, self.kinds)

    def shell_complete(
        self, ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[CompletionItem]:
        from click.shell_completion import CompletionItem

        prefix = incomplete.strip().lower().replace("-", "")
        if any(c not in "0123456789abcdef" for c in prefix):
            return []
        try:
            ledger = open_ledger(ctx.find_root().params.get("store") or DEFAULT_STORE)
        except Exception:  # completing never fails out loud
            return []
        try:
            assert ledger.read_model is not None
            found = ledger.read_model.ids_with_prefixes([prefix], COMPLETIONS)
        except Exception:
            return []
        finally:
            ledger.close()
        return [CompletionItem(str(UUID(key))) for kind, key in found if kind in self.kinds]


COMPLETIONS = 50
"""At most this many ids of each kind are offered to the shell."""


@click.group(cls=LedgerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--store",
    envvar=STORE_ENV,
    default=DEFAULT_STORE,
    show_default=True,
    metavar="URL",
    help=STORE_HELP,
)
@click.option("--json", "json_mode", is_flag=True, help=JSON_HELP)
@click.option("--actor", envvar=ACTOR_ENV, default=None, metavar="NAME", help=ACTOR_HELP)
@click.version_option(package_name="trainledger")
@click.pass_context
def cli(ctx: click.Context, store: str, json_mode: bool, actor: str | None) -> None:
    """trainledger: an event-sourced ledger of training runs, checkpoints and evals.

    The global options (--store, --json, --actor) go before or after the verb.
    Ids may be given by a unique prefix; tables show short ids, --json full ones.
    """
    ctx.obj = Session(
        store=store, json_mode=json_mode, actor=default_actor() if actor is None else actor
    )
    ctx.call_on_close(lambda: ctx.obj._ledger and ctx.obj._ledger.close())


# The groups the command modules register their verbs on.


@cli.group()
def experiment() -> None:
    """Create experiments (pending training runs)."""


@cli.group()
def run() -> None:
    """Move training runs through their lifecycle and inspect them."""


@cli.group()
def checkpoint() -> None:
    """Register checkpoints, manage deployability, inspect them."""


@cli.group("eval")
def eval_group() -> None:
    """Attach benchmark evaluations to checkpoints."""


@cli.group("projections")
def projections_group() -> None:
    """The read models the queries answer from."""


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; map every failure to a one-line message and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    json_mode = "--json" in args
    try:
        # Without standalone mode, click returns a command's `ctx.exit(code)` / `Exit(code)`.
        returned = cli.main(args=args, prog_name="trainledger", standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.Abort as error:
        if type(error.__cause__) is KeyboardInterrupt:  # Ctrl-C, not SIGTERM (`Stopped`)
            output.emit_error(json_mode, "interrupted", "interrupted")
            sys.exit(INTERRUPTED_EXIT)
        output.emit_error(json_mode, "aborted", "aborted")
        sys.exit(ERROR_EXIT)
    except click.UsageError as error:
        hint = f" (see '{error.ctx.command_path} --help')" if error.ctx else ""
        output.emit_error(json_mode, "usage", f"{error.format_message()}{hint}")
        sys.exit(USAGE_EXIT)
    except click.ClickException as error:
        output.emit_error(json_mode, "usage", error.format_message())
        sys.exit(error.exit_code)
    except LedgerError as error:
        output.emit_error(json_mode, error.code, error.message)
        sys.exit(ERROR_EXIT)
    except EventSourcingError as error:
        output.emit_error(json_mode, "store_error", f"store error: {error}")
        sys.exit(ERROR_EXIT)
    except BrokenPipeError:
        sys.exit(ERROR_EXIT)
    except Exception as error:
        if os.environ.get("TRAINLEDGER_DEBUG") == "1":
            raise
        output.emit_error(
            json_mode, "internal_error", f"internal error: {type(error).__name__}: {error}"
        )
        sys.exit(ERROR_EXIT)
    sys.exit(returned if isinstance(returned, int) else 0)
