"""CLI conventions as gh, git and docker users expect them (issue 15, items 18-22 and 10).

Global options after the verb, enumerations that are usage errors, help on
every option, bare groups that print their help, unique id prefixes, short
ids in tables, readable history and lineage, shell completion, and text
output that stored text cannot use to rewrite the terminal.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from tests.support import (
    READER_FAMILY,
    REPO,
    Cli,
    CliResult,
    deployable_lifecycle,
    experiment_args,
    reader_request,
)
from trainledger.adapters.store import open_ledger
from trainledger.cli.main import cli as root


@dataclass(frozen=True)
class Store:
    cli: Cli
    run: str
    checkpoint: str
    runs: list[str]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """One deployable checkpoint and 17 more runs: two runs share a first hex digit."""
    tmp = tmp_path_factory.mktemp("conventions")
    url = f"sqlite:///{tmp / 'ledger.db'}"
    ledger = open_ledger(url)
    try:
        run, checkpoint = deployable_lifecycle(ledger, tmp / "out", eval_id="eval-1")
        runs = [run]
        for _ in range(17):
            created = ledger.create_experiment(
                reader_request(tmp / "out"),
                dataset_fingerprint="0123456789abcdef",
                sample_count=10,
                actor="a",
            )
            runs.append(created["trainRunId"])
    finally:
        ledger.close()
    return Store(Cli(url, cwd=tmp), run, checkpoint, runs)


def hexed(identifier: str) -> str:
    return identifier.replace("-", "")


def one_line_error(result: CliResult, code: int) -> str:
    assert result.code == code, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    line: str = lines[0]
    return line


# --- 18. global options after the verb ---------------------------------------------


def test_global_options_are_accepted_after_the_verb(store: Store, tmp_path: Path) -> None:
    assert store.cli.store is not None
    before = store.cli("--json", "run", "list")
    after = store.cli("run", "list", "--json")
    assert after.code == 0, after.stderr
    assert after.json == before.json

    nowhere = Cli(None, cwd=tmp_path)
    stats = nowhere("stats", "--store", store.cli.store, "--json")
    assert stats.code == 0, stats.stderr
    assert stats.json["totalRuns"] == len(store.runs)

    shown = nowhere("run", "show", store.run, "--json", "--store", store.cli.store)
    assert shown.code == 0, shown.stderr
    assert shown.json["trainRunId"] == store.run


def test_actor_after_the_verb_is_recorded(cli: Cli, tmp_path: Path) -> None:
    run_id = cli.ok(*experiment_args(tmp_path / "out"))["trainRunId"]
    started = cli("run", "start", run_id, "--actor", "bob", "--json")
    assert started.code == 0, started.stderr
    events = cli.ok("history", run_id)["events"]
    assert [e["actor"] for e in events] == ["tester", "bob"]


# --- 19. choices, help, bare groups -------------------------------------------------


@pytest.mark.parametrize(
    ("args", "choices"),
    [
        (("run", "list", "--status", "runing"), ["pending", "running", "completed", "failed"]),
        (("eval", "list", "--verdict", "passed"), ["pass", "fail", "compare_only"]),
        (("lineage", "x", "--format", "svg"), ["json", "text", "dot", "mermaid"]),
    ],
)
def test_a_typo_in_an_enumerated_option_is_a_usage_error(
    store: Store, args: tuple[str, ...], choices: list[str]
) -> None:
    line = one_line_error(store.cli(*args), code=2)
    for choice in choices:
        assert choice in line


@pytest.mark.parametrize(
    ("option", "typo", "choices"),
    [
        ("--profile", "local-readr", ["local-reader", "local-editor"]),
        ("--backend", "dryrun", ["peft-trl-orpo", "unsloth-orpo", "dry-run"]),
        ("--tier", "gpu", ["consumer-gpu", "small-gpu", "cpu-experimental"]),
    ],
)
def test_experiment_enumerations_are_choices_and_nothing_is_recorded(
    cli: Cli, tmp_path: Path, option: str, typo: str, choices: list[str]
) -> None:
    line = one_line_error(cli(*experiment_args(tmp_path / "out", **{option: typo})), code=2)
    for choice in choices:
        assert choice in line
    assert "no ledger at" in one_line_error(cli("stats"), code=1)  # not even a store was made


def test_eval_attach_mode_and_verdict_are_choices(store: Store) -> None:
    base = ["eval", "attach", store.checkpoint, "--eval-id", "e-typo", "--benchmark-id", "b"]
    base += ["--family", READER_FAMILY, "--baseline", "0.5", "--candidate", "0.6"]
    bad_mode = store.cli(*base, "--mode", "prompt", "--verdict", "pass")
    assert "prompt_assisted" in one_line_error(bad_mode, code=2)
    bad_verdict = store.cli(*base, "--mode", "prompt_assisted", "--verdict", "ok")
    assert "compare_only" in one_line_error(bad_verdict, code=2)


def _commands(group: click.Group, path: str) -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = [(path, group)]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _commands(command, f"{path} {name}")
        else:
            found.append((f"{path} {name}", command))
    return found


def test_every_option_has_help_text_naming_its_environment_variable() -> None:
    missing = [
        f"{path} {'/'.join(param.opts)}"
        for path, command in _commands(root, "trainledger")
        for param in command.params
        if isinstance(param, click.Option) and not param.help
    ]
    assert missing == []
    options = {param.name: param for param in root.params if isinstance(param, click.Option)}
    assert "TRAINLEDGER_STORE" in (options["store"].help or "")
    assert "TRAINLEDGER_ACTOR" in (options["actor"].help or "")


def test_help_after_the_verb_names_the_environment_variables(store: Store) -> None:
    shown = store.cli("run", "list", "--help")
    assert shown.code == 0
    assert "TRAINLEDGER_STORE" in shown.stdout
    assert "--json" in shown.stdout


@pytest.mark.parametrize("group", ["run", "checkpoint", "eval", "experiment", "projections"])
def test_a_bare_group_prints_its_help(store: Store, group: str) -> None:
    shown = store.cli(group)
    assert shown.code == 0, shown.stderr
    assert shown.stderr == ""
    assert shown.stdout.startswith(f"Usage: trainledger {group} ")
    assert "Commands:" in shown.stdout


# --- 20. unique prefixes, short ids ---------------------------------------------------


def shared_first_digit(runs: list[str]) -> tuple[str, list[str]]:
    by_digit: dict[str, list[str]] = defaultdict(list)
    for run in runs:
        by_digit[run[0]].append(run)
    digit, sharing = next((d, r) for d, r in by_digit.items() if len(r) > 1)
    return digit, sharing


def test_a_unique_prefix_is_accepted_wherever_an_id_is(store: Store) -> None:
    run_prefix, checkpoint_prefix = store.run[:8], hexed(store.checkpoint)[:10]
    assert store.cli.ok("run", "show", run_prefix)["trainRunId"] == store.run
    assert store.cli.ok("checkpoint", "show", checkpoint_prefix)["checkpointId"] == (
        store.checkpoint
    )
    assert store.cli.ok("lineage", checkpoint_prefix)["checkpointId"] == store.checkpoint
    assert store.cli.ok("lineage", checkpoint_prefix.upper())["checkpointId"] == store.checkpoint
    run_events = store.cli.ok("history", run_prefix)["events"]
    assert run_events[0]["type"] == "Registered"
    assert len(store.cli.ok("history", checkpoint_prefix)["events"]) >= 2
    listed = store.cli.ok("checkpoint", "list", "--run", run_prefix)["checkpoints"]
    assert [c["checkpointId"] for c in listed] == [store.checkpoint]
    evals = store.cli.ok("eval", "list", "--checkpoint", checkpoint_prefix)["evals"]
    assert [e["evalId"] for e in evals] == ["eval-1"]


def test_write_commands_resolve_prefixes_to_the_full_id(store: Store) -> None:
    target = store.runs[-1]
    failed = store.cli.ok("run", "fail", target[:9], "--reason", "withdrawn")
    assert (failed["trainRunId"], failed["status"]) == (target, "failed")
    attached = store.cli.ok(
        "eval", "attach", store.checkpoint[:8], "--eval-id", "eval-prefix",
        "--benchmark-id", "bench-1", "--family", READER_FAMILY, "--mode", "prompt_assisted",
        "--baseline", "0.5", "--candidate", "0.7", "--verdict", "pass",
    )  # fmt: skip
    assert attached["checkpointId"] == store.checkpoint
    assert attached["currentEval"]["checkpointId"] == store.checkpoint


def test_an_ambiguous_prefix_is_refused_listing_the_candidates(store: Store) -> None:
    digit, sharing = shared_first_digit(store.runs)
    for args in (("run", "show", digit), ("run", "start", digit), ("history", digit)):
        line = one_line_error(store.cli(*args), code=1)
        assert "ambiguous" in line
        for run in sharing:
            assert hexed(run)[:8] in line
    refused = store.cli("run", "show", digit, json_mode=True)
    assert refused.json["error"]["code"] == "ambiguous_id"


def test_a_prefix_matching_nothing_is_not_found(store: Store) -> None:
    taken = {hexed(i)[:4] for i in [*store.runs, store.checkpoint]}
    unused = next(p for p in (f"{n:04x}" for n in range(65536)) if p not in taken)
    for args in (("run", "show", unused), ("lineage", unused), ("train", unused)):
        assert "not found" in one_line_error(store.cli(*args), code=1)
    # a checkpoint's prefix is no run's
    checkpoint_as_run = store.cli("run", "show", store.checkpoint[:8])
    assert "not found" in one_line_error(checkpoint_as_run, code=1)


def test_tables_show_short_ids_and_json_keeps_full_ids(store: Store) -> None:
    table = store.cli("run", "list").stdout.splitlines()
    shown = [line.split()[0] for line in table[1:]]
    assert sorted(shown) == sorted(hexed(r)[:8] for r in store.runs)
    checkpoints = store.cli("checkpoint", "list").stdout.splitlines()[1].split()
    assert checkpoints[:2] == [hexed(store.checkpoint)[:8], hexed(store.run)[:8]]
    assert store.cli.ok("run", "list")["runs"][-1]["trainRunId"] == store.run


# --- 21. readable history and lineage ----------------------------------------------


def test_history_text_shows_nested_values_as_compact_json(cli: Cli, tmp_path: Path) -> None:
    run_id = cli.ok(*experiment_args(tmp_path / "out", **{"--backend": "peft-trl-orpo"}))[
        "trainRunId"
    ]
    trained = cli("train", run_id, "--scripts-dir", str(REPO / "examples" / "trainer"))
    assert trained.code == 0, trained.stderr
    text = cli("history", run_id).stdout
    assert "{'" not in text
    assert "trainerResult=" in text
    nested = re.search(r"trainerResult=(\{.*\})", text)
    assert nested is not None
    assert json.loads(nested.group(1))["artifact"]["adapterFormat"] == "peft-adapter"
    checkpoint = cli.ok("run", "show", run_id)["checkpointIds"][0]
    assert "{'" not in cli("history", checkpoint).stdout
    assert "{'" not in cli("checkpoint", "show", checkpoint).stdout


def test_lineage_text_shows_the_hyperparameters(cli: Cli, tmp_path: Path) -> None:
    run_id = cli.ok(*experiment_args(tmp_path / "out"), "--hp", "learningRate=0.00025")[
        "trainRunId"
    ]
    cli.ok("run", "start", run_id)
    checkpoint = cli.ok(
        "checkpoint", "register", run_id, "--family", READER_FAMILY, "--artifact", "a"
    )["checkpointId"]
    text = cli("lineage", checkpoint).stdout
    line = next(line for line in text.splitlines() if "hyperparameters" in line)
    assert "learningRate=0.00025" in line
    assert "{'" not in text


# --- 22. shell completion ------------------------------------------------------------


def test_bash_completion_script_and_completing_verbs(store: Store) -> None:
    script = store.cli(_TRAINLEDGER_COMPLETE="bash_source")
    assert script.code == 0, script.stderr
    assert "_trainledger_completion" in script.stdout
    assert "complete " in script.stdout
    verbs = store.cli(
        _TRAINLEDGER_COMPLETE="bash_complete", COMP_WORDS="trainledger ru", COMP_CWORD="1"
    )
    assert "plain,run" in verbs.stdout.splitlines()
    assert "_TRAINLEDGER_COMPLETE=bash_source" in (REPO / "README.md").read_text()


def test_ids_complete_from_the_views(store: Store) -> None:
    assert store.cli.store is not None
    words = f"trainledger --store {store.cli.store} run show {store.run[:3]}"
    completed = store.cli(_TRAINLEDGER_COMPLETE="bash_complete", COMP_WORDS=words, COMP_CWORD="5")
    assert f"plain,{store.run}" in completed.stdout.splitlines()


# --- 10. text output escapes control and bidi characters ------------------------------

HOSTILE = "ok\u202eevil\u2066x\u2069\u200f\x85\x9b2J\u2028end"


def test_stored_text_cannot_rewrite_the_terminal(cli: Cli, tmp_path: Path) -> None:
    run_id = cli.ok(*experiment_args(tmp_path / "out"))["trainRunId"]
    failed = cli.ok("run", "fail", run_id, "--reason", HOSTILE)
    assert failed["failureReason"] == HOSTILE  # JSON stays exact
    for args in (("run", "show", run_id), ("history", run_id), ("run", "list")):
        shown = cli(*args).stdout
        for character in "\u202e\u2066\u2069\u200f\x85\x9b\u2028":
            assert character not in shown, (args, character)
    shown = cli("run", "show", run_id).stdout
    assert "\\u202e" in shown
    assert "\\x9b" in shown


def test_error_lines_escape_control_characters(store: Store) -> None:
    line = one_line_error(store.cli("run", "show", "x\x1b[2Jy\u202e"), code=1)
    assert "\x1b" not in line
    assert "\u202e" not in line
    assert "\\x1b" in line
