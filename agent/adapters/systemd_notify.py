"""sd_notify without libsystemd: one datagram to $NOTIFY_SOCKET (a no-op elsewhere)."""

from __future__ import annotations

import os
import socket


def sd_notify(*states: str) -> bool:
    """Send e.g. "READY=1", "STOPPING=1", "WATCHDOG=1". True if a notify socket was there."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        s.connect(address)
        s.sendall("\n".join(states).encode())
    return True


def watchdog_interval() -> float | None:
    """Half of WATCHDOG_USEC in seconds, if systemd asked this process for pings."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 2_000_000
