"""The WebhookSender port over httpx: one pooled async client for every webhook URL."""

from __future__ import annotations

import httpx

from agent.ports import WebhookReply

USER_AGENT = "compute-agent-webhooks"


class HttpxWebhookSender:
    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        # No redirects (a 3xx is not an acknowledgement) and no proxy from the environment:
        # a receiver is reached as configured, loopback included.
        self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False,
                                         headers={"User-Agent": USER_AGENT}, transport=transport)

    async def post(self, url: str, body: bytes, headers: dict[str, str],
                   timeout_s: float) -> WebhookReply:
        try:
            response = await self._client.post(url, content=body, headers=headers,
                                                timeout=timeout_s)
        except (httpx.HTTPError, httpx.InvalidURL) as e:
            # The class only: some httpx messages quote the URL, which may hold a secret.
            return WebhookReply(status=None, error=type(e).__name__)
        return WebhookReply(status=response.status_code)

    async def aclose(self) -> None:
        await self._client.aclose()
