"""The API of `trainledger serve` (SPEC §10) against a real server, on SQLite and PostgreSQL.

One server per backend for the module (tokens issued with the CLI first);
each test makes its own runs and checkpoints.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.serve_support import (
    ROLES,
    Server,
    eval_body,
    experiment_body,
    issue_tokens,
    start_server,
)
from tests.postgres_cluster import SUPERUSER_PASSWORD
from tests.support import Cli, write_artifact

_unique = itertools.count()


@dataclass
class Service:
    server: Server
    cli: Cli
    tokens: dict[str, str]
    root: Path

    def unique(self, prefix: str) -> str:
        return f"{prefix}-{next(_unique)}"

    def deployable(self) -> tuple[str, str]:
        """A run and its deployable checkpoint, made over HTTP by the writer."""
        writer = self.tokens["writer"]
        run = self.server.post("/v1/experiments", writer, body=experiment_body(self.root / "out"))
        assert run.status == 201, run.body
        run_id = run.json["trainRunId"]
        assert self.server.post(f"/v1/runs/{run_id}/start", writer).status == 200
        artifact = write_artifact(self.root / "out", self.unique("adapter"))
        checkpoint = self.server.post(
            f"/v1/runs/{run_id}/checkpoints",
            writer,
            body={"family": "qwen2.5-7b-reader", "artifactPath": artifact},
        )
        assert checkpoint.status == 201, checkpoint.body
        checkpoint_id = checkpoint.json["checkpointId"]
        assert self.server.post(f"/v1/runs/{run_id}/complete", writer).status == 200
        attached = self.server.post(
            f"/v1/checkpoints/{checkpoint_id}/evals?markDeployable=true",
            writer,
            body=eval_body(self.unique("eval")),
        )
        assert attached.status == 201, attached.body
        return run_id, checkpoint_id


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    root = tmp_path_factory.mktemp(f"serve-{request.param}")
    if request.param == "sqlite":
        store = f"sqlite:///{root / 'ledger.db'}"
        drop = None
    else:
        cluster = request.getfixturevalue("postgres_cluster")
        name = cluster.create_database()
        store = cluster.url(name)
        drop = lambda: cluster.drop_database(name)  # noqa: E731
    cli = Cli(store, cwd=root)
    tokens = issue_tokens(cli, *ROLES)
    server = start_server(store, root)
    try:
        yield Service(server, cli, tokens, root)
    finally:
        output = server.stop()
        if drop is not None:
            drop()
    # Whatever happened in the module: the service printed no token and no password.
    for token in tokens.values():
        assert token not in output
    assert SUPERUSER_PASSWORD not in output


# --- authentication and roles ------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Bearer nonsense", "Basic dXNlcjpwYXNz", f"Bearer tl_{'0' * 32}_{'a' * 43}"],
)
def test_no_or_an_unknown_token_is_401(service: Service, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    for method, path in [("GET", "/v1/stats"), ("POST", "/v1/experiments"), ("GET", "/v1/runs")]:
        answer = service.server.request(method, path, headers=headers)
        assert answer.status == 401, (method, path, answer.body)
        assert answer.error_code == "unauthenticated"
        assert answer.headers["www-authenticate"] == "Bearer"


def test_a_token_revoked_by_the_cli_while_serving_is_401_from_the_next_request(
    service: Service,
) -> None:
    name = service.unique("temp")
    token = service.cli.ok("token", "create", name, "--role", "writer")["token"]
    assert service.server.get("/v1/stats", token).status == 200
    service.cli.ok("token", "revoke", name)
    answer = service.server.get("/v1/stats", token)
    assert answer.status == 401
    assert answer.error_code == "unauthenticated"


ROUTES_BY_ROLE = {
    "reader": [("GET", "/v1/stats"), ("GET", "/v1/runs"), ("GET", "/v1/events/stream")],
    "writer": [
        ("POST", "/v1/experiments"),
        ("POST", "/v1/runs/x/start"),
        ("POST", "/v1/shadow/x/route"),
    ],
    "deployer": [
        ("POST", "/v1/promotions/x/evaluate"),
        ("POST", "/v1/promotions/x/advance"),
        ("POST", "/v1/deployments/local-reader/bind"),
        ("POST", "/v1/deployments/local-reader/rollback"),
    ],
    "admin": [("GET", "/v1/tokens"), ("POST", "/v1/tokens")],
}


@pytest.mark.parametrize("role", ROLES)
def test_a_role_too_low_is_403_before_the_body_is_judged(service: Service, role: str) -> None:
    rank = ROLES.index(role)
    for needed, routes in ROUTES_BY_ROLE.items():
        if ROLES.index(needed) <= rank:
            continue
        for method, path in routes:
            # A body that is not even JSON: the role is refused first.
            answer = service.server.request(
                method,
                path,
                token=service.tokens[role],
                data=b"\x00{not json",
                headers={"Content-Type": "application/json"},
            )
            assert answer.status == 403, (role, method, path, answer.body)
            assert answer.error_code == "forbidden"


def test_each_role_reaches_what_it_may(service: Service) -> None:
    for role in ROLES:
        assert service.server.get("/v1/stats", service.tokens[role]).status == 200
    for role in ("writer", "deployer", "admin"):
        created = service.server.post(
            "/v1/experiments", service.tokens[role], body=experiment_body(service.root / "out")
        )
        assert created.status == 201, (role, created.body)
    assert service.server.get("/v1/tokens", service.tokens["admin"]).status == 200


def test_the_actor_of_a_write_is_the_token_name_whatever_the_client_sends(
    service: Service,
) -> None:
    body = {**experiment_body(service.root / "out"), "actor": "mallory"}
    created = service.server.post(
        "/v1/experiments",
        service.tokens["writer"],
        body=body,
        headers={"X-Actor": "mallory", "X-Trainledger-Actor": "mallory"},
    )
    assert created.status == 201, created.body
    run_id = created.json["trainRunId"]
    started = service.server.post(
        f"/v1/runs/{run_id}/start?actor=mallory", service.tokens["deployer"], body={}
    )
    assert started.status == 200, started.body
    history = service.server.get(f"/v1/history/{run_id}", service.tokens["reader"]).json
    assert [(e["type"], e["actor"]) for e in history["events"]] == [
        ("Registered", "writer"),
        ("Started", "deployer"),
    ]
    assert "mallory" not in service.cli.ok("history", run_id).__repr__()


# --- errors ----------------------------------------------------------------------------


def test_not_found_is_404(service: Service) -> None:
    reader, writer = service.tokens["reader"], service.tokens["writer"]
    missing = "00000000-0000-4000-8000-000000000000"
    for path in [f"/v1/runs/{missing}", f"/v1/checkpoints/{missing}", "/v1/checkpoints/nope"]:
        answer = service.server.get(path, reader)
        assert answer.status == 404, (path, answer.body)
        assert answer.error_code == "not_found"
    assert service.server.get(f"/v1/checkpoints/{missing}/lineage", reader).status == 404
    assert service.server.get(f"/v1/history/{missing}", reader).status == 404
    assert service.server.post(f"/v1/runs/{missing}/start", writer).status == 404
    assert service.server.get("/v1/no-such-thing", reader).status == 404


def test_a_rule_refusal_or_a_conflict_is_409_and_records_nothing(service: Service) -> None:
    writer = service.tokens["writer"]
    run_id, checkpoint_id = service.deployable()
    before = service.cli.ok("history", run_id)
    answer = service.server.post(f"/v1/runs/{run_id}/start", writer)
    assert answer.status == 409
    assert answer.error_code == "invalid_transition"
    assert "completed" in answer.json["error"]["message"]
    again = service.server.post(f"/v1/checkpoints/{checkpoint_id}/deployable", writer)
    assert again.status == 409
    assert again.error_code == "not_deployable"
    assert service.cli.ok("history", run_id) == before


def test_invalid_input_is_422_with_the_error_document(service: Service) -> None:
    writer = service.tokens["writer"]
    out = service.root / "out"
    cases: list[tuple[str, Any]] = [
        ("/v1/experiments", experiment_body(out, backend="tensorflow")),  # the ledger's rule 1
        ("/v1/experiments", experiment_body(out, hyperparameters={"learningRate": 7})),
        ("/v1/experiments", {"profile": "local-reader"}),  # FastAPI's own validation, reshaped
        ("/v1/experiments", [1, 2, 3]),
        ("/v1/experiments", {**experiment_body(out), "surprise": 1}),
    ]
    for path, body in cases:
        answer = service.server.post(path, writer, body=body)
        assert answer.status == 422, (body, answer.body)
        assert set(answer.json) == {"error"}
        assert set(answer.json["error"]) == {"code", "message"}
    bad_json = service.server.post(
        "/v1/experiments", writer, data=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert bad_json.status == 422
    reader = service.tokens["reader"]
    for query in ["/v1/stats?asOf=yesterday", "/v1/runs?limit=0", "/v1/impact?dataset=xyz"]:
        answer = service.server.get(query, reader)
        assert answer.status == 422, (query, answer.body)
        assert answer.error_code == "invalid_input"


def test_an_eval_refused_as_input_is_422_and_a_duplicate_is_409(service: Service) -> None:
    writer = service.tokens["writer"]
    _, checkpoint_id = service.deployable()
    wrong_delta = eval_body(service.unique("eval"), delta=0.9)
    answer = service.server.post(f"/v1/checkpoints/{checkpoint_id}/evals", writer, body=wrong_delta)
    assert answer.status == 422
    used = eval_body(service.unique("eval"))
    assert (
        service.server.post(f"/v1/checkpoints/{checkpoint_id}/evals", writer, body=used).status
        == 201
    )
    duplicate = service.server.post(f"/v1/checkpoints/{checkpoint_id}/evals", writer, body=used)
    assert duplicate.status == 409
    assert duplicate.error_code == "duplicate_eval"


def test_a_body_over_one_mebibyte_is_413(service: Service) -> None:
    writer = service.tokens["writer"]
    big = b'{"profile": "' + b"x" * (1024 * 1024) + b'"}'
    head = (
        "POST /v1/experiments HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {writer}\r\nContent-Type: application/json\r\n"
    )
    declared = service.server.raw(f"{head}Content-Length: {len(big)}\r\n\r\n".encode(), big)
    assert declared.startswith(b"HTTP/1.1 413"), declared[:200]
    assert b'"body_too_large"' in declared
    # Refused on its declared length alone: nothing of the body need be sent.
    unsent = service.server.raw(f"{head}Content-Length: {2 * len(big)}\r\n\r\n".encode())
    assert unsent.startswith(b"HTTP/1.1 413")
    # Chunked, with no length declared: refused once the bytes read pass the limit.
    chunks = b"".join(b"%x\r\n%s\r\n" % (65536, b"x" * 65536) for _ in range(20)) + b"0\r\n\r\n"
    chunked = service.server.raw(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode(), chunks)
    assert chunked.startswith(b"HTTP/1.1 413"), chunked[:200]
    # A body just under the limit is read and judged.
    under = service.server.post(
        "/v1/experiments",
        writer,
        data=b'{"profile": "' + b"x" * (1024 * 1024 - 100) + b'"}',
        headers={"Content-Type": "application/json"},
    )
    assert under.status == 422


# --- idempotency -----------------------------------------------------------------------


def test_a_repeat_with_the_same_idempotency_key_returns_the_first_outcome(
    service: Service,
) -> None:
    writer = service.tokens["writer"]
    key = {"Idempotency-Key": service.unique("key")}
    body = experiment_body(service.root / "out")
    first = service.server.post("/v1/experiments", writer, body=body, headers=key)
    events = service.server.get("/v1/stats", writer).json["totalRuns"]
    again = service.server.post("/v1/experiments", writer, body=body, headers=key)
    assert (first.status, again.status) == (201, 201)
    assert again.json == first.json
    assert service.server.get("/v1/stats", writer).json["totalRuns"] == events
    other = service.server.post(
        "/v1/experiments", writer, body={**body, "sampleCount": 11}, headers=key
    )
    assert other.status == 409
    assert other.error_code == "idempotency_key_reused"
    history = service.cli.ok("history", first.json["trainRunId"])
    assert history["events"][0]["idempotencyKey"] == key["Idempotency-Key"]


def test_a_state_change_repeated_with_its_key_records_once(service: Service) -> None:
    writer = service.tokens["writer"]
    run_id = service.server.post(
        "/v1/experiments", writer, body=experiment_body(service.root / "out")
    ).json["trainRunId"]
    key = {"Idempotency-Key": service.unique("start")}
    first = service.server.post(f"/v1/runs/{run_id}/start", writer, headers=key)
    again = service.server.post(f"/v1/runs/{run_id}/start", writer, headers=key)
    assert (first.status, again.status) == (200, 200)
    assert again.json == first.json
    assert len(service.cli.ok("history", run_id)["events"]) == 2


# --- queries ----------------------------------------------------------------------------


def test_answers_are_the_cli_documents(service: Service) -> None:
    run_id, checkpoint_id = service.deployable()
    reader = service.tokens["reader"]
    pairs = [
        (f"/v1/runs/{run_id}", ["run", "show", run_id]),
        (f"/v1/checkpoints/{checkpoint_id}", ["checkpoint", "show", checkpoint_id]),
        (f"/v1/checkpoints/{checkpoint_id}/lineage", ["lineage", checkpoint_id]),
        (f"/v1/history/{checkpoint_id}", ["history", checkpoint_id]),
        (f"/v1/evals?checkpoint={checkpoint_id}", ["eval", "list", "--checkpoint", checkpoint_id]),
        (f"/v1/checkpoints?run={run_id}", ["checkpoint", "list", "--run", run_id]),
        ("/v1/impact?dataset=0123456789abcdef", ["impact", "--dataset", "0123456789abcdef"]),
    ]
    for path, args in pairs:
        answer = service.server.get(path, reader)
        assert answer.status == 200, (path, answer.body)
        assert answer.json == service.cli.ok(*args), path
    stats = service.server.get("/v1/stats", reader).json
    assert stats["deployableCheckpoints"] >= 1
    # An id prefix is resolved as the CLI resolves it.
    assert service.server.get(f"/v1/runs/{run_id[:13]}", reader).json["trainRunId"] == run_id


def test_lineage_as_svg_dot_and_mermaid(service: Service) -> None:
    _, checkpoint_id = service.deployable()
    reader = service.tokens["reader"]
    svg = service.server.get(f"/v1/checkpoints/{checkpoint_id}/lineage?format=svg", reader)
    assert svg.status == 200
    assert svg.headers["content-type"].startswith("image/svg+xml")
    text = svg.body.decode()
    assert text.startswith("<svg")
    assert text.rstrip().endswith("</svg>")
    assert f"checkpoint {checkpoint_id}" in text
    assert text.count("<rect") >= 5  # dataset, run, checkpoint, eval, decision
    import xml.etree.ElementTree as ET

    ET.fromstring(text)  # well-formed
    dot = service.server.get(f"/v1/checkpoints/{checkpoint_id}/lineage?format=dot", reader)
    assert (
        dot.body.decode().splitlines()
        == service.cli("lineage", checkpoint_id, "--format", "dot").stdout.splitlines()
    )
    mermaid = service.server.get(f"/v1/checkpoints/{checkpoint_id}/lineage?format=mermaid", reader)
    assert mermaid.body.decode().startswith("flowchart LR")
    bad = service.server.get(f"/v1/checkpoints/{checkpoint_id}/lineage?format=png", reader)
    assert bad.status == 422


def test_as_of_answers_as_it_was_then(service: Service) -> None:
    run_id, checkpoint_id = service.deployable()
    reader, writer = service.tokens["reader"], service.tokens["writer"]
    created = service.cli.ok("checkpoint", "show", checkpoint_id)["createdAt"]
    revoked = service.server.post(
        f"/v1/checkpoints/{checkpoint_id}/revoke", writer, body={"reason": "regressed"}
    )
    assert revoked.status == 200
    assert revoked.json["deployable"] is False
    then = service.server.get(f"/v1/checkpoints/{checkpoint_id}?asOf={created}", reader).json
    assert then["deployable"] is False
    assert then["evals"] == []
    marked = service.cli.ok("checkpoint", "show", checkpoint_id)["deployabilityHistory"][0]
    at_mark = service.server.get(
        f"/v1/checkpoints/{checkpoint_id}/lineage?asOf={marked['timestamp']}", reader
    ).json
    assert at_mark["deployable"] is True
    assert (
        service.server.get(f"/v1/checkpoints/{checkpoint_id}", reader).json["deployable"] is False
    )
    before = "2000-01-01T00:00:00Z"
    assert service.server.get(f"/v1/runs/{run_id}?asOf={before}", reader).json == {}
    empty_svg = service.server.get(
        f"/v1/checkpoints/{checkpoint_id}/lineage?format=svg&asOf={before}", reader
    )
    assert empty_svg.status == 200
    assert b"no checkpoint" in empty_svg.body
    assert service.server.get(f"/v1/stats?asOf={before}", reader).json["totalRuns"] == 0


def test_events_page_and_verify(service: Service) -> None:
    reader = service.tokens["reader"]
    service.deployable()
    page = service.server.get("/v1/events?after=2&limit=3", reader).json["events"]
    assert [e["position"] for e in page] == [
        e["position"] for e in service.cli.ok("verify") and _events(service.cli, 2, 3)
    ]
    verified = service.server.get("/v1/verify", reader).json
    assert verified["ok"] is True
    assert re.fullmatch(r"[0-9a-f]{64}", verified["digest"])


def _events(cli: Cli, after: int, limit: int) -> list[dict[str, Any]]:
    import json

    result = cli("events", "--after", str(after), "--limit", str(limit))
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_tokens_over_http_for_admins(service: Service) -> None:
    admin = service.tokens["admin"]
    name = service.unique("bot")
    created = service.server.post("/v1/tokens", admin, body={"name": name, "role": "reader"})
    assert created.status == 201
    token = created.json["token"]
    assert service.server.get("/v1/stats", token).status == 200
    listed = service.server.get("/v1/tokens", admin)
    assert token not in listed.body.decode()
    assert name in [t["name"] for t in listed.json["tokens"]]
    assert service.server.post(f"/v1/tokens/{name}/revoke", admin, body={}).status == 200
    assert service.server.get("/v1/stats", token).status == 401
    creator = next(e for e in service.cli.ok("history", created.json["tokenId"])["events"])
    assert creator["actor"] == "admin"


def test_openapi_describes_the_resources(service: Service) -> None:
    answer = service.server.get("/openapi.json")
    assert answer.status == 200
    paths = answer.json["paths"]
    for path in [
        "/v1/experiments",
        "/v1/runs/{run_id}/start",
        "/v1/runs/{run_id}/result",
        "/v1/checkpoints/{checkpoint_id}/evals",
        "/v1/checkpoints/{checkpoint_id}/lineage",
        "/v1/events/stream",
        "/v1/verify",
    ]:
        assert path in paths
    docs = service.server.get("/docs")
    assert docs.status == 200
    assert b"/v1/experiments" in docs.body


# --- SPEC §9 over HTTP ----------------------------------------------------------------


def test_promotion_shadow_and_deployment_over_http(service: Service) -> None:
    """The deployer takes a checkpoint to a routed slot; the writer records observations;
    every decision's actor is the token's name."""
    server, deployer, writer = service.server, service.tokens["deployer"], service.tokens["writer"]
    _, checkpoint = service.deployable()
    evaluated = server.post(f"/v1/promotions/{checkpoint}/evaluate", deployer, body={})
    assert evaluated.status == 200, evaluated.body
    assert evaluated.json["state"] == "candidate_only"
    assert evaluated.json["decisions"][0]["actor"] == "deployer"
    refused = server.post(
        f"/v1/promotions/{checkpoint}/advance", deployer, body={"review": False, "note": "n"}
    )
    assert refused.status == 409, refused.body
    advanced = server.post(
        f"/v1/promotions/{checkpoint}/advance",
        deployer,
        body={"review": True, "note": "read it", "actor": "mallory"},
    )
    assert advanced.json["state"] == "shadow_ready"
    assert advanced.json["decisions"][-1]["actor"] == "deployer"
    routed = server.post(f"/v1/shadow/{checkpoint}/route", writer, body={"profile": "local-reader"})
    assert routed.status == 201, routed.body
    observation = routed.json["observationId"]
    done = f"/v1/shadow/observations/{observation}/complete"
    assert server.post(done, writer, body={"outcome": "accepted"}).status == 200
    assert server.post(done, writer, body={"outcome": "accepted"}).status == 409
    assert server.post(done, writer, body={"outcome": "maybe"}).status == 422
    stats = server.get(f"/v1/shadow/{checkpoint}/stats", service.tokens["reader"])
    assert (stats.status, stats.json["totalCount"], stats.json["acceptedCount"]) == (200, 1, 1)
    assert (
        server.post(
            "/v1/deployments/local-reader/bind", writer, body={"checkpointId": checkpoint}
        ).status
        == 403
    )
    bound = server.post(
        "/v1/deployments/local-reader/bind", deployer, body={"checkpointId": checkpoint}
    )
    assert bound.status == 200, bound.body
    assert (bound.json["activeCheckpointId"], bound.json["boundBy"]) == (checkpoint, "deployer")
    routing = server.post("/v1/deployments/local-reader/enable-routing", deployer)
    assert routing.json["routingEnabled"] is True
    slot = server.get("/v1/deployments/local-reader", service.tokens["reader"])
    assert slot.json == routing.json
    then = server.get(
        f"/v1/deployments/local-reader?asOf={bound.json['boundAt']}", service.tokens["reader"]
    )
    assert (then.json["activeCheckpointId"], then.json["routingEnabled"]) == (checkpoint, False)
    listed = server.get("/v1/deployments", service.tokens["reader"]).json["slots"]
    assert [s["profile"] for s in listed] == ["local-reader", "local-editor"]
    shown = server.get(f"/v1/promotions/{checkpoint}", service.tokens["reader"])
    assert shown.json == advanced.json
    assert (
        server.post(
            "/v1/deployments/local-editor/bind", deployer, body={"checkpointId": checkpoint}
        ).status
        == 409
    )
    assert (
        server.post(
            "/v1/deployments/local-reader/disable-routing", deployer, body={"reason": "done"}
        ).json["routingEnabled"]
        is False
    )
