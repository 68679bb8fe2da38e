"""`compute-agent server console ID`: this terminal on the guest's serial console, through
the daemon's WebSocket (GET /v2.1/servers/{id}/console), until Ctrl-] is typed or the
guest's QEMU goes away. The terminal is put in raw mode (when it is one) and restored."""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import threading
import tty
from collections.abc import Iterator

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect, unix_connect

from agent.cli.client import ApiError

ESCAPE = b"\x1d"  # Ctrl-], as telnet and virsh console
_CLOSE_REASONS = {4401: 401, 4404: 404}


def open_console(server_id: str, socket_path: str | None, url: str | None,
                 token: str | None) -> ClientConnection:
    headers = {"X-Auth-Token": token} if token else {}
    path = f"/v2.1/servers/{server_id}/console"
    try:
        if url:
            ws_url = url.replace("https://", "wss://").replace("http://", "ws://")
            ws = connect(ws_url.rstrip("/") + path, additional_headers=headers)
        else:
            ws = unix_connect(socket_path, "ws://agent" + path, additional_headers=headers)
    except InvalidStatus as e:
        raise ApiError(e.response.status_code, "console refused") from None
    except OSError as e:
        raise ApiError(0, f"cannot reach the agent: {e}") from None
    return ws


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _guest_to_terminal(ws: ClientConnection, out: int, done: threading.Event) -> None:
    with contextlib.suppress(ConnectionClosed, OSError):
        for message in ws:
            os.write(out, message if isinstance(message, bytes) else message.encode())
    done.set()


def attach(ws: ClientConnection, stdin: int | None = None, stdout: int | None = None) -> int:
    """Pump bytes until Ctrl-] (0), or the daemon closes the console (1, with its reason)."""
    fd_in = sys.stdin.fileno() if stdin is None else stdin
    fd_out = sys.stdout.fileno() if stdout is None else stdout
    done = threading.Event()
    reader = threading.Thread(target=_guest_to_terminal, args=(ws, fd_out, done), daemon=True)
    print("Connected to the serial console (Ctrl-] to leave)\r", file=sys.stderr, flush=True)
    reader.start()
    with raw_terminal(fd_in):
        while not done.is_set():
            ready, _, _ = select.select([fd_in], [], [], 0.2)
            if not ready:
                continue
            data = os.read(fd_in, 1024)
            if not data or ESCAPE in data:
                data = data.split(ESCAPE, 1)[0] if data else b""
                if data:
                    ws.send(data)
                ws.close()
                reader.join(timeout=5)
                print("\r", file=sys.stderr)
                return 0
            try:
                ws.send(data)
            except ConnectionClosed:
                break
    reader.join(timeout=5)
    close = ws.close_code
    if close in _CLOSE_REASONS:
        raise ApiError(_CLOSE_REASONS[close], ws.close_reason or "console refused")
    print("\r\nconsole closed by the agent\r", file=sys.stderr)
    return 1
