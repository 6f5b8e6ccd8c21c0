"""How a lineage reads: a text tree, a Graphviz digraph, a Mermaid flowchart.

Also the phrases other renderings share with it (`text.py` uses them): one
eval, one deployability decision, and the note of an empty as-of answer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from trainledger.domain.views import iso


def compact(value: Any) -> str:
    """A value in one line of text: nested values as compact JSON, others as they read."""
    if isinstance(value, dict | list):
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    return str(value)


def assignments(mapping: dict[str, Any]) -> str:
    """`key=value, ...` of a mapping's present values (nested ones as compact JSON)."""
    return ", ".join(f"{k}={compact(v)}" for k, v in mapping.items() if v is not None)


def nothing_as_of(kind: str, identifier: str, as_of: datetime | None) -> str:
    """What an empty as-of answer says: nothing was recorded for that id by then."""
    return " ".join(f"no {kind} {identifier} as of {iso(as_of)}".split())


def eval_line(summary: dict[str, Any]) -> str:
    """One eval: its id, verdict, benchmark, mode and scores."""
    return (
        f"{summary['evalId']}: {summary['verdict']} on {summary['benchmarkId']} "
        f"({summary['mode']}, {summary['baselineScore']} -> {summary['candidateScore']}, "
        f"delta {summary['delta']:+.6g})"
    )


def decision_line(change: dict[str, Any]) -> str:
    """One deployability decision: when, which, by whom, on which eval, why."""
    what = "marked deployable" if change["deployable"] else "revoked"
    basis = f" on eval {change['evalId']}" if change.get("evalId") else ""
    reason = f": {change['reason']}" if change.get("reason") else ""
    return f"{change['timestamp']} {what} by {change['actor']}{basis}{reason}"


def check_text(check: dict[str, Any]) -> str:
    """One gate check: its name, measured value, threshold and verdict."""
    verdict = "pass" if check["passed"] else "FAIL"
    return f"{check['name']} {check['value']:.6g} vs {check['threshold']:.6g} {verdict}"


def promotion_line(decision: dict[str, Any]) -> str:
    """One promotion decision: when, what it made the state, by whom, on what evidence."""
    basis = f" on eval {decision['evalId']}" if decision.get("evalId") else ""
    evidence = f" ({decision['evidence']} evidence)" if decision.get("evidence") else ""
    words = decision.get("note") or decision.get("reason")
    said = f": {words}" if words else ""
    return (
        f"{decision['timestamp']} {decision['kind']} -> {decision['state']} by "
        f"{decision['actor']}{basis}{evidence}{said}"
    )


def binding_line(binding: dict[str, Any]) -> str:
    """One binding of a checkpoint to a profile."""
    active = "  [active]" if binding.get("active") else ""
    how = "bound" if binding["kind"] == "bind" else "rolled back"
    return f"{binding['boundAt']} {how} to {binding['profile']} by {binding['boundBy']}{active}"


Branches = list[tuple[str, list[Any]]]
"""A text tree's children: each a line and its own children."""


def _tree(label: str, children: Branches, prefix: str = "") -> list[str]:
    lines = [label] if not prefix else []
    for i, (child, grandchildren) in enumerate(children):
        last = i == len(children) - 1
        lines.append(f"{prefix}{'└── ' if last else '├── '}{child}")
        lines += _tree(child, grandchildren, prefix + ("    " if last else "│   "))
    return lines


def lineage_text(lineage: dict[str, Any]) -> list[str]:
    """The lineage as a tree: checkpoint, its run and dataset, evals, decisions."""
    checkpoint, run = lineage["checkpoint"], lineage["run"]
    state = "DEPLOYABLE" if lineage["deployable"] else "not deployable"
    as_of = f" (as of {lineage['asOf']})" if lineage.get("asOf") else ""
    artifact: Branches = [("digest " + (checkpoint["artifactDigest"] or "none recorded"), [])]
    children: Branches = [
        (f"artifact {checkpoint['artifactPath']}", artifact),
    ]
    if run is not None:
        spec, dataset = run["spec"], lineage["dataset"]
        samples = "" if dataset["sampleCount"] is None else f"{dataset['sampleCount']} samples, "
        times = ", ".join(
            f"{name} {run[key]}"
            for name, key in (
                ("created", "createdAt"),
                ("started", "startedAt"),
                ("completed", "completedAt"),
                ("failed", "failedAt"),
            )
            if run[key]
        )
        run_children: Branches = [
            (f"experiment {run['experimentId']}", []),
            (
                f"dataset {dataset['datasetFingerprint']} "
                f"({samples}export {dataset['datasetExportId']})",
                [],
            ),
            (_run_config(spec), []),
            *[
                (f"{name} {assignments(spec[name])}", [])
                for name in ("hyperparameters", "budget")
                if spec.get(name)
            ],
            (times, []),
        ]
        if run["failureReason"]:
            run_children.append((f"failure: {run['failureReason']}", []))
        children.append((f"run {run['trainRunId']}  {run['status']}", run_children))
    current = lineage["currentEval"]["evalId"] if lineage["currentEval"] else None
    evals: Branches = [
        (
            f"{eval_line(e)} by {e['actor']} at {e['attachedAt']}"
            + ("  [current]" if e["evalId"] == current else ""),
            [],
        )
        for e in lineage["evals"]
    ]
    children.append(("evals" if evals else "evals: none", evals))
    decisions: Branches = [(decision_line(c), []) for c in lineage["deployabilityHistory"]]
    children.append(("deployability" if decisions else "deployability: never decided", decisions))
    promotion = lineage.get("promotion") or {}
    steps: Branches = [
        (promotion_line(d), [(check_text(c), []) for c in d["checks"]])
        for d in promotion.get("decisions", [])
    ]
    promoted = promotion.get("state")
    children.append((f"promotion: {promoted}" if promoted else "promotion: never evaluated", steps))
    bindings: Branches = [(binding_line(b), []) for b in lineage.get("bindings", [])]
    children.append(("deployments" if bindings else "deployments: never bound", bindings))
    label = (
        f"checkpoint {checkpoint['checkpointId']} ({checkpoint['targetModelFamily']})  "
        f"{state}{as_of}"
    )
    return _tree(label, children)


def _short_digest(digest: str | None) -> str:
    if digest is None:
        return "none"
    algorithm, _, value = digest.rpartition(":")
    return f"{algorithm}:{value[:16]}" if algorithm else value[:16]


def _lineage_nodes(
    lineage: dict[str, Any],
) -> tuple[list[tuple[str, list[str]]], list[tuple[str, str, str, bool]]]:
    """Nodes (id, label lines) and edges (from, to, label, dashed) of a lineage picture."""
    checkpoint, run = lineage["checkpoint"], lineage["run"]
    nodes: list[tuple[str, list[str]]] = []
    edges: list[tuple[str, str, str, bool]] = []
    if run is not None:
        dataset = lineage["dataset"]
        samples = [] if dataset["sampleCount"] is None else [f"{dataset['sampleCount']} samples"]
        nodes.append(("dataset", ["dataset", dataset["datasetFingerprint"], *samples]))
        nodes.append(
            (
                "run",
                [
                    f"run {run['trainRunId']}",
                    run["status"],
                    f"config {run['configFingerprint']}",
                    f"backend {run['backend']}" if run["backend"] else IMPORTED,
                ],
            )
        )
        edges += [("dataset", "run", "trained", False), ("run", "checkpoint", "produced", False)]
    nodes.append(
        (
            "checkpoint",
            [
                f"checkpoint {checkpoint['checkpointId']}",
                checkpoint["targetModelFamily"],
                f"digest {_short_digest(checkpoint['artifactDigest'])}",
                "DEPLOYABLE" if lineage["deployable"] else "not deployable",
            ],
        )
    )
    current = lineage["currentEval"]["evalId"] if lineage["currentEval"] else None
    eval_nodes = {}
    for i, summary in enumerate(lineage["evals"]):
        node = f"eval{i}"
        eval_nodes[summary["evalId"]] = node
        marker = ["current"] if summary["evalId"] == current else []
        nodes.append(
            (
                node,
                [
                    f"eval {summary['evalId']}",
                    f"{summary['verdict']} on {summary['benchmarkId']}",
                    f"delta {summary['delta']:+.6g}",
                    *marker,
                ],
            )
        )
        edges.append(("checkpoint", node, "evaluated", False))
    for i, change in enumerate(lineage["deployabilityHistory"]):
        node = f"decision{i}"
        what = "marked deployable" if change["deployable"] else "revoked"
        reason = [change["reason"]] if change.get("reason") else []
        nodes.append((node, [what, f"by {change['actor']}", change["timestamp"], *reason]))
        edges.append(("checkpoint", node, "decision", False))
        if change.get("evalId") in eval_nodes:
            edges.append((eval_nodes[change["evalId"]], node, "on", True))
    promotion = lineage.get("promotion") or {}
    if promotion.get("state"):
        last = promotion["decisions"][-1]
        nodes.append(
            (
                "promotion",
                [f"promotion {promotion['state']}", f"by {last['actor']}", last["timestamp"]],
            )
        )
        edges.append(("checkpoint", "promotion", "gate", False))
        if last.get("evalId") in eval_nodes:
            edges.append((eval_nodes[last["evalId"]], "promotion", "on", True))
    for i, binding in enumerate(lineage.get("bindings", [])):
        node = f"binding{i}"
        how = "bound" if binding["kind"] == "bind" else "rolled back"
        active = ["active"] if binding.get("active") else []
        nodes.append(
            (
                node,
                [
                    f"{how} to {binding['profile']}",
                    f"by {binding['boundBy']}",
                    binding["boundAt"],
                    *active,
                ],
            )
        )
        edges.append(("checkpoint", node, "deployed", False))
    return nodes, edges


lineage_graph = _lineage_nodes
"""The lineage's nodes (id, label lines) and edges (from, to, label, dashed): what the
service draws as SVG."""

DOT_NEWLINE = "\\n"


def _dot_text(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    # a line break in a free-text field (a reason) stays inside its label
    return "\\n".join(escaped.splitlines()) if escaped else escaped


def empty_lineage_dot(note: str) -> list[str]:
    """An empty digraph (the answer as of a moment before the checkpoint), titled `note`."""
    return ["digraph lineage {", f'  label="{_dot_text(note)}";', "}"]


def lineage_dot(lineage: dict[str, Any]) -> list[str]:
    """The lineage as a Graphviz digraph (`dot -Tsvg`)."""
    nodes, edges = _lineage_nodes(lineage)
    lines = [
        "digraph lineage {",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded", fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    for node, label_lines in nodes:
        text = DOT_NEWLINE.join(_dot_text(t) for t in label_lines)
        lines.append(f'  {node} [label="{text}"];')
    for source, target, label, dashed in edges:
        style = ", style=dashed" if dashed else ""
        lines.append(f'  {source} -> {target} [label="{_dot_text(label)}"{style}];')
    lines.append("}")
    return lines


def _mermaid_text(text: str) -> str:
    # Mermaid entity codes: `#` first, so the codes themselves are not escaped.
    for character, code in (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(character, code)
    return "<br/>".join(text.splitlines()) if text else text


def empty_lineage_mermaid(note: str) -> list[str]:
    """An empty flowchart (the answer as of a moment before the checkpoint), `note` a comment."""
    return ["flowchart LR", f"    %% {' '.join(note.split())}"]


def lineage_mermaid(lineage: dict[str, Any]) -> list[str]:
    """The lineage as a Mermaid flowchart."""
    nodes, edges = _lineage_nodes(lineage)
    lines = ["flowchart LR"]
    for node, label_lines in nodes:
        text = "<br/>".join(_mermaid_text(t) for t in label_lines)
        lines.append(f'    {node}["{text}"]')
    for source, target, label, dashed in edges:
        arrow = "-.->" if dashed else "-->"
        lines.append(f'    {source} {arrow}|"{_mermaid_text(label)}"| {target}')
    return lines


IMPORTED = "imported from the seed (no experiment spec)"
"""What a picture says of a run's spec when the seed kept none (`import-seed`)."""


def _run_config(spec: dict[str, Any]) -> str:
    if "backend" not in spec:  # a run imported from the seed: only what it kept
        return f"config {spec.get('configFingerprint')}, {IMPORTED}"
    return (
        f"config {spec['configFingerprint']}, code {spec['codeHash']}, "
        f"backend {spec['backend']} on {spec['hardwareTier']}"
    )
