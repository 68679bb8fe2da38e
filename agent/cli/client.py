"""A small Compute API client over the daemon's unix socket (or a URL).

httpx is imported when a client is made: `compute-agent serve` shares this package and
must not load it (megabytes) for nothing."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx


def add_connection_args(p: argparse.ArgumentParser) -> None:
    """How a command reaches the daemon: its socket (default) or a URL, and a token."""
    p.add_argument("--socket", help="the daemon's API socket (default from the config)")
    p.add_argument("--url", help="an API base URL instead of the socket, e.g. http://host:8774")
    p.add_argument("--token", help="X-Auth-Token (default: $COMPUTE_AGENT_TOKEN)")


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"HTTP {status}: {message}")


def _fault_message(response: httpx.Response) -> str:
    try:
        body = response.json()
        (fault,) = body.values()
        return str(fault.get("message", body))
    except (ValueError, AttributeError, TypeError):
        return response.text[:500] or response.reason_phrase


class AgentClient:
    def __init__(self, socket_path: str | None = None, url: str | None = None,
                 token: str | None = None, timeout: float = 30.0) -> None:
        self.socket_path, self.token = socket_path, token
        import httpx
        self._transport_error = httpx.TransportError
        transport = httpx.HTTPTransport(uds=socket_path) if socket_path else None
        headers = {"X-Auth-Token": token} if token else {}
        self._http = httpx.Client(transport=transport, base_url=(url or "http://agent") + "/v2.1",
                                  headers=headers, timeout=timeout)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                params: dict[str, Any] | None = None) -> Any:
        try:
            r = self._http.request(method, path, json=body, params=params)
        except self._transport_error as e:
            raise ApiError(0, f"cannot reach the agent: {e}") from None
        if r.status_code >= 400:
            raise ApiError(r.status_code, _fault_message(r))
        return r.json() if r.content else None

    def create_server(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", "/servers", {"server": body})["server"]

    def list_servers(self, **params: Any) -> list[dict[str, Any]]:
        return self.request("GET", "/servers/detail", params=params)["servers"]

    def get_server(self, server_id: str) -> dict[str, Any]:
        return self.request("GET", f"/servers/{server_id}")["server"]

    def update_server(self, server_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("PUT", f"/servers/{server_id}", {"server": body})["server"]

    def set_metadata(self, server_id: str, items: dict[str, str]) -> dict[str, str]:
        return self.request("POST", f"/servers/{server_id}/metadata", {"metadata": items})["metadata"]

    def delete_server(self, server_id: str) -> None:
        self.request("DELETE", f"/servers/{server_id}")

    def close(self) -> None:
        self._http.close()
