"""The WebhookSender port over httpx: one pooled async client for every webhook URL.

httpx (and the TLS stack it loads, megabytes) is imported on the first delivery: a
daemon with no webhook configured never pays for it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.adapters.http_client import plain_client
from agent.protocols import WebhookReply

if TYPE_CHECKING:
    import httpx

USER_AGENT = "compute-agent-webhooks"


class HttpxWebhookSender:
    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def _connected(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = plain_client(USER_AGENT, self._transport)
        return self._client

    async def post(self, url: str, body: bytes, headers: dict[str, str],
                   timeout_s: float) -> WebhookReply:
        client = self._connected()
        import httpx  # loaded by _connected
        try:
            response = await client.post(url, content=body, headers=headers,
                                         timeout=timeout_s)
        except (httpx.HTTPError, httpx.InvalidURL) as e:
            # The class only: some httpx messages quote the URL, which may hold a secret.
            return WebhookReply(status=None, error=type(e).__name__)
        return WebhookReply(status=response.status_code)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
