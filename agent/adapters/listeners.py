"""Listening sockets for the API: a unix socket with the mode and group the operator
chose (set before anyone can connect), and an optional TCP one."""

from __future__ import annotations

import contextlib
import grp
import os
import resource
import socket
from pathlib import Path

import structlog

from agent.errors import ConfigError

log = structlog.get_logger("agent.listeners")

# Descriptors kept for everything but API clients: the store, libvirt, qemu-img and
# libguestfs children's pipes, dnsmasq, webhooks, logs.
FD_RESERVE = 256


def unix_listener(path: Path, mode: int, group: str | None) -> socket.socket:
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if path.is_socket():
            path.unlink()  # a stale socket of a previous run
        elif path.exists():
            raise ConfigError(f"{path} exists and is not a socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # born 0600: nobody else can connect before chmod
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            sock.close()
            raise ConfigError(f"api_socket_group {group!r} does not exist") from None
        os.chown(path, -1, gid)
    os.chmod(path, mode)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def tcp_listener(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except (ValueError, OSError) as e:
        raise ConfigError(f"api_listen {address!r}: {e}") from None
    family, _, _, _, sockaddr = infos[0]
    # Made as TCP explicitly (proto, not 0): asyncio sets TCP_NODELAY only on connections
    # of a socket whose proto is IPPROTO_TCP. Without it, a small answer written in two
    # parts (headers, then body) waited ~40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(sockaddr)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def connections_per_listener(wanted: int, listeners: int) -> int:
    """How many connections each listener may hold so that clients can never take the
    descriptors the agent's own work needs: the soft RLIMIT_NOFILE is raised to the hard
    one (systemd's default soft limit is 1024), and whatever is left above FD_RESERVE is
    shared between the listeners. Fewer than `wanted` is logged."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    budget = max(1, (soft - FD_RESERVE) // max(1, listeners))
    if budget < wanted:
        log.warning("listeners.connections_capped", wanted=wanted, allowed=budget,
                    nofile=soft, hint="raise LimitNOFILE")
    return min(wanted, budget)
