"""The JobTickets port over httpx (issue 12): GET {controller_url}/fleet/v1/jobs/{job_id}
?host=H with the fleet token in X-Fleet-Token. Bounded: a timeout for the whole answer and
a size cap on its body. The token is never logged nor put in an error (errors name the
status or the exception class only: an httpx message may quote the URL).

httpx is imported on the first fetch (a single-host daemon never loads it)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

from pydantic import ValidationError

from agent.adapters.http_client import plain_client
from agent.errors import ConfigError, ControllerUnavailable
from agent.model.fleet import JobTicket

if TYPE_CHECKING:
    import httpx

TOKEN_HEADER = "X-Fleet-Token"  # noqa: S105 - a header name
USER_AGENT = "compute-agent-fleet"
TIMEOUT_S = 10.0
MAX_TICKET_BYTES = 1 << 20  # a job's payload (personality files, user data) is far smaller


def read_fleet_token(path: Path) -> str:
    """The shared fleet secret (one line). ConfigError naming the file, never its content."""
    try:
        token = path.read_text().strip()
    except OSError as e:
        raise ConfigError(f"amqp: cannot read fleet_token_file {path}: {e.strerror}") from None
    if not token or not all("!" <= c <= "~" for c in token):
        raise ConfigError(f"amqp: fleet_token_file {path} must hold one line of visible ASCII")
    return token


class HttpxJobTickets:
    def __init__(self, controller_url: str, host: str, token: str, *, timeout_s: float = TIMEOUT_S,
                 max_bytes: int = MAX_TICKET_BYTES,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._base = controller_url.rstrip("/")
        self._host = host
        self._token = token
        self._timeout_s = timeout_s
        self._max_bytes = max_bytes
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:  # never the token
        return f"HttpxJobTickets({self._base!r}, host={self._host!r})"

    def _connected(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = plain_client(USER_AGENT, self._transport)
        return self._client

    async def fetch(self, job_id: UUID) -> JobTicket | None:
        client = self._connected()
        import httpx  # loaded by plain_client
        try:
            async with asyncio.timeout(self._timeout_s):
                body = await self._get(client, job_id)
        except (httpx.HTTPError, httpx.InvalidURL, TimeoutError) as e:
            raise ControllerUnavailable(f"controller unreachable for job {job_id}: "
                                        f"{type(e).__name__}") from None
        if body is None:
            return None
        try:
            return JobTicket.model_validate_json(body)
        except ValidationError:
            raise ControllerUnavailable(f"the controller's ticket for job {job_id} is not a "
                                        "valid JobTicket") from None

    async def _get(self, client: httpx.AsyncClient, job_id: UUID) -> bytes | None:
        async with client.stream("GET", f"{self._base}/fleet/v1/jobs/{job_id}",
                                 params={"host": self._host},
                                 headers={TOKEN_HEADER: self._token},
                                 timeout=self._timeout_s) as response:
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise ControllerUnavailable(f"the controller answered {response.status_code} "
                                            f"for job {job_id}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > self._max_bytes:
                    raise ControllerUnavailable(f"the controller's ticket for job {job_id} is "
                                                f"larger than {self._max_bytes} bytes")
            return bytes(body)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
