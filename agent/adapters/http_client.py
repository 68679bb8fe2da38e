"""The outgoing HTTP client the agent's adapters share (webhooks, the controller's job
tickets): httpx, imported on first use so a daemon that sends nothing never loads it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx


def plain_client(user_agent: str, transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
    """No redirects (a 3xx is neither an acknowledgement nor a ticket) and no proxy from
    the environment: the other end is reached as configured, loopback included."""
    import httpx

    return httpx.AsyncClient(follow_redirects=False, trust_env=False,
                             headers={"User-Agent": user_agent}, transport=transport)
