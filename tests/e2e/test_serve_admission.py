"""A token the service remembers is still checked on every request (adapters/http/auth.py).

The service remembers who a live token was, judges the role at once, and
checks the token against the store in the same turn as the request's first
work (or before the answer when there is none). Revoked by the CLI while
serving, such a token is 401 from the next request, whatever it asks and
whatever its body holds, and nothing of that request is recorded.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.serve_support import Server, experiment_body, issue_tokens, start_server
from tests.support import Cli

_unique = itertools.count()


@dataclass
class Service:
    server: Server
    cli: Cli
    admin: str
    root: Path

    def remembered(self, role: str) -> tuple[str, str]:
        """A new token of `role` that the service has let in (a GET and a write); its name."""
        name = f"{role}-{next(_unique)}"
        token = self.cli.ok("token", "create", name, "--role", role)["token"]
        for _ in range(2):
            assert self.server.get("/v1/stats", token).status == 200
        return token, name

    def runs(self) -> int:
        return len(self.server.get("/v1/runs", self.admin).json["runs"])


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    root = tmp_path_factory.mktemp(f"admission-{request.param}")
    if request.param == "sqlite":
        store = f"sqlite:///{root / 'ledger.db'}"
    else:
        cluster = request.getfixturevalue("postgres_cluster")
        store = cluster.url(cluster.create_database())
    cli = Cli(store, cwd=root)
    admin = issue_tokens(cli, "admin")["admin"]
    server = start_server(store, root)
    try:
        yield Service(server, cli, admin, root)
    finally:
        server.stop()


def _unauthenticated(server: Server, method: str, path: str, token: str, **options: object) -> None:
    answer = server.request(method, path, token=token, **options)  # type: ignore[arg-type]
    assert answer.status == 401, (method, path, answer.status, answer.body)
    assert answer.error_code == "unauthenticated"
    assert answer.headers["www-authenticate"] == "Bearer"


def test_a_remembered_token_revoked_by_the_cli_is_401_whatever_it_asks(service: Service) -> None:
    token, name = service.remembered("writer")
    body = experiment_body(service.root / "out")
    created = service.server.post("/v1/experiments", token, body=body)
    assert created.status == 201, created.body
    run_id = created.json["trainRunId"]
    runs = service.runs()
    service.cli.ok("token", "revoke", name)

    _unauthenticated(service.server, "POST", "/v1/experiments", token, body=body)
    _unauthenticated(service.server, "POST", f"/v1/runs/{run_id}/start", token)
    # A body FastAPI would refuse (422), a role the token never had (403): 401 first.
    _unauthenticated(
        service.server,
        "POST",
        "/v1/experiments",
        token,
        data=b"\x00{not json",
        headers={"Content-Type": "application/json"},
    )
    _unauthenticated(service.server, "GET", "/v1/tokens", token)
    _unauthenticated(service.server, "GET", "/v1/stats", token)
    _unauthenticated(service.server, "GET", f"/v1/runs/{run_id}", token)
    _unauthenticated(service.server, "GET", "/v1/events/stream", token)
    # Nothing of those requests was recorded.
    assert service.runs() == runs
    assert service.server.get(f"/v1/runs/{run_id}", service.admin).json["status"] == "pending"


def test_a_remembered_page_cookie_revoked_is_sent_to_sign_in(service: Service) -> None:
    token, name = service.remembered("reader")
    cookie = {"Cookie": f"trainledger_token={token}"}
    assert service.server.get("/", headers=cookie).status == 200
    assert service.server.get("/", headers=cookie).status == 200
    service.cli.ok("token", "revoke", name)
    answer = service.server.get("/", headers=cookie)
    assert answer.status == 303
    assert answer.headers["location"] == "/login?next=/"


def test_a_remembered_token_is_still_refused_what_its_role_does_not_reach(
    service: Service,
) -> None:
    token, name = service.remembered("writer")
    assert service.server.get("/v1/tokens", token).status == 403
    assert service.server.get("/v1/tokens", token).status == 403
    created = service.server.post(
        "/v1/experiments", token, body=experiment_body(service.root / "out")
    )
    assert created.status == 201, created.body
    history = service.cli.ok("history", created.json["trainRunId"])["events"]
    assert {event["actor"] for event in history} == {name}


def test_a_revoked_token_stays_refused_and_a_new_one_is_let_in(service: Service) -> None:
    token, name = service.remembered("reader")
    service.cli.ok("token", "revoke", name)
    _unauthenticated(service.server, "GET", "/v1/stats", token)
    _unauthenticated(service.server, "GET", "/v1/stats", token)
    again = service.cli.ok("token", "create", f"{name}-again", "--role", "reader")["token"]
    assert service.server.get("/v1/stats", again).status == 200
    assert service.server.get("/v1/stats", again).status == 200
