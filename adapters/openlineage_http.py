"""Posting OpenLineage events to an HTTP endpoint: Marquez's `POST {URL}/api/v1/lineage`.

The events go through the `openlineage-python` client's own HTTP transport
(JSON body, `Content-Type: application/json`, the client's serialiser), one
request per event, in order, without retries: the first answer that is no
success stops the posting, and is reported with its HTTP status, the number
of the event it refused and how many were sent before it. So is an endpoint
that does not answer within the timeout, or cannot be reached. An API key,
if given, is sent as `Authorization: Bearer KEY` and never shown.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

import requests
from openlineage.client.event_v2 import RunEvent
from openlineage.client.transport.http import (
    ApiKeyTokenProvider,
    HttpConfig,
    HttpTransport,
    TokenProvider,
)

from trainledger.domain.errors import LedgerError

API_KEY_ENV = "TRAINLEDGER_OPENLINEAGE_API_KEY"
ENDPOINT = "api/v1/lineage"
DEFAULT_TIMEOUT = 10.0
"""Seconds to wait for the endpoint to accept a connection, and then for each answer."""
NO_RETRIES = {"total": 0, "read": False}
"""urllib3 `Retry` settings: never send an event twice (a refusal stops, and is reported);
`read=False` lets a read timeout surface as one (`requests.ReadTimeout`)."""
EXCERPT = 200
"""At most this many characters of a refusal's body are shown."""


class LineagePostError(LedgerError):
    """Posting the events stopped: the endpoint refused one, timed out, or cannot be reached."""

    code = "openlineage_post_failed"


class LineageRefusedError(LineagePostError):
    code = "openlineage_refused"


class LineageTimeoutError(LineagePostError):
    code = "openlineage_timeout"


class LineageUnreachableError(LineagePostError):
    code = "openlineage_unreachable"


def endpoint(url: str) -> str:
    """Where the events of `--post URL` go: `{URL}/api/v1/lineage`."""
    return f"{url.rstrip('/')}/{ENDPOINT}"


def shown(url: str) -> str:
    """A URL as printed: without a password it may hold."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def post_events(
    events: Iterable[RunEvent],
    url: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    api_key: str | None = None,
) -> int:
    """Send each event to `{url}/api/v1/lineage`, in order; how many were sent.

    Raises a `LineagePostError` at the first event that is not accepted (a
    4xx or 5xx answer, no answer within `timeout` seconds, no connection).
    """
    auth = ApiKeyTokenProvider({"apiKey": api_key}) if api_key else TokenProvider({})
    config = HttpConfig(
        url=f"{url.rstrip('/')}/",  # so that the endpoint is joined below the URL's path
        endpoint=ENDPOINT,
        timeout=timeout,
        auth=auth,
        retry=dict(NO_RETRIES),
    )
    target = shown(endpoint(url))
    transport = HttpTransport(config)
    sent = 0
    try:
        for number, event in enumerate(events, start=1):
            try:
                transport.emit(event)
            except requests.HTTPError as error:
                raise LineageRefusedError(
                    f"OpenLineage endpoint {target} refused event {number} with "
                    f"{_status(error.response)}{_excerpt(error.response)}; {_sent(sent)}"
                ) from None
            except requests.Timeout:
                raise LineageTimeoutError(
                    f"OpenLineage endpoint {target} did not answer event {number} "
                    f"within {timeout:g} s; {_sent(sent)}"
                ) from None
            except requests.RequestException as error:
                raise LineageUnreachableError(
                    f"cannot reach OpenLineage endpoint {target} (event {number}): "
                    f"{_reason(error)}; {_sent(sent)}"
                ) from None
            sent += 1
    finally:
        transport.close()
    return sent


def _sent(count: int) -> str:
    return f"{count} event{'' if count == 1 else 's'} sent before it"


def _status(response: requests.Response | None) -> str:
    if response is None:
        return "an HTTP error"
    return f"HTTP {response.status_code} {response.reason or ''}".rstrip()


def _excerpt(response: requests.Response | None) -> str:
    if response is None:
        return ""
    text = " ".join(response.text.split())
    if not text:
        return ""
    return f": {text[:EXCERPT]}{'...' if len(text) > EXCERPT else ''}"


def _reason(error: BaseException) -> str:
    """The operating system's reason under a connection error (`Connection refused`)."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and isinstance(current.strerror, str):
            return current.strerror
        causes = [getattr(current, "reason", None), current.__cause__, current.__context__]
        causes += list(current.args)
        pending += [cause for cause in causes if isinstance(cause, BaseException)]
    return " ".join(str(error).split())
