"""The API's TCP listener: its connections send small answers at once (TCP_NODELAY)."""

from __future__ import annotations

import asyncio
import socket

from agent.adapters.listeners import tcp_listener


async def test_connections_of_the_tcp_listener_have_nodelay():
    """Without TCP_NODELAY an answer written as headers then body waits ~40 ms for the
    client's delayed ACK: every small API answer (a page of 10, /flavors) took 44 ms."""
    sock = tcp_listener("127.0.0.1:0")
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = writer.get_extra_info("socket")
        accepted.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(connected, sock=sock)
    try:
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        assert await asyncio.wait_for(accepted, 10) != 0
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
