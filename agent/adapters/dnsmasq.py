"""The Dhcp port with dnsmasq: one process per DHCP network, started and supervised by
the agent, bound to that network's bridge only, serving static leases only, DNS off.

Files, all under `<state_dir>/dhcp/<network id>/`: `hosts` (one `mac,ip` line per bound
port, read by dnsmasq on start and on SIGHUP), `leases` (dnsmasq's lease database), `pid`
and `dnsmasq.log`. The system's dnsmasq configuration is never read (--conf-file=/dev/null).

A change that only adds or keeps hosts is a SIGHUP. One that removes a host (a port
deleted or detached) restarts the process with that host's lease taken out of the lease
database: dnsmasq reads leases only at start, and a lease must not outlive its port. A
dnsmasq left behind by an agent that was killed is found by its pid file and replaced.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

from agent.errors import DhcpError
from agent.model.network import DhcpHost, Network

START_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 5.0
DEFAULT_LEASE_TIME = "24h"  # long: guests keep their address while the agent is down


@dataclass
class _Instance:
    network: Network
    proc: subprocess.Popen[bytes] | None = None


def _host_lines(hosts: Sequence[DhcpHost]) -> str:
    return "".join(f"{h.mac},{h.ip}\n" for h in hosts)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)  # dnsmasq re-reads it on SIGHUP after dropping to an unprivileged user
    os.replace(tmp, path)


class DnsmasqDhcp:
    def __init__(self, state_dir: Path, binary: str = "dnsmasq",
                 lease_time: str = DEFAULT_LEASE_TIME) -> None:
        self.root = state_dir / "dhcp"
        self.binary = binary
        self.lease_time = lease_time
        self._lock = threading.Lock()
        self._instances: dict[UUID, _Instance] = {}

    # -- files ----------------------------------------------------------------------------
    def dir(self, network_id: UUID) -> Path:
        return self.root / str(network_id)

    def hosts_file(self, network_id: UUID) -> Path:
        return self.dir(network_id) / "hosts"

    def lease_file(self, network_id: UUID) -> Path:
        return self.dir(network_id) / "leases"

    def pid_file(self, network_id: UUID) -> Path:
        return self.dir(network_id) / "pid"

    def command(self, network: Network) -> list[str]:
        d = self.dir(network.id)
        cidr = network.cidr
        cmd = [
            self.binary, "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
            "--no-hosts", "--no-resolv", "--no-ping",
            f"--interface={network.bridge}", "--bind-interfaces", "--except-interface=lo",
            f"--pid-file={d / 'pid'}", f"--dhcp-leasefile={d / 'leases'}",
            f"--dhcp-hostsfile={d / 'hosts'}", f"--log-facility={d / 'dnsmasq.log'}",
            "--log-dhcp",
            f"--dhcp-range={cidr.network_address},static,{cidr.netmask},{self.lease_time}",
            f"--dhcp-option=option:router,{network.gateway_ip}",
            "--dhcp-authoritative",
            # Silent to MACs with no lease here: on a network spanning hosts every host's
            # dnsmasq hears every guest, and must neither offer nor NAK another host's.
            "--dhcp-ignore=tag:!known",
        ]
        if network.mtu != 1500:
            cmd.append(f"--dhcp-option=option:mtu,{network.mtu}")
        return cmd

    # -- the port -------------------------------------------------------------------------
    def sync(self, network: Network, hosts: Sequence[DhcpHost]) -> None:
        with self._lock:
            inst = self._instances.setdefault(network.id, _Instance(network))
            restart = inst.network != network
            inst.network = network
            d = self.dir(network.id)
            for folder in (self.root, d):  # explicit modes: the agent may run with UMask=0027
                folder.mkdir(mode=0o755, parents=True, exist_ok=True)
                folder.chmod(0o755)
            hosts_file = self.hosts_file(network.id)
            old = set(_read(hosts_file).splitlines())
            text = _host_lines(hosts)
            if text != _read(hosts_file):
                _write_atomically(hosts_file, text)
            removed = old - set(text.splitlines())
            if restart or removed or not self._alive(inst):
                self._stop(inst)
                self._drop_stale_leases(network.id, hosts)
                self._start(inst)
            elif old != set(text.splitlines()):
                assert inst.proc is not None
                inst.proc.send_signal(signal.SIGHUP)

    def revive(self) -> list[UUID]:
        revived = []
        with self._lock:
            for network_id, inst in self._instances.items():
                if self._alive(inst):
                    continue
                self._stop(inst)
                self._start(inst)
                revived.append(network_id)
        return revived

    def stop_unknown(self, known: set[UUID]) -> list[UUID]:
        stopped = []
        with self._lock:
            entries = sorted(self.root.iterdir()) if self.root.is_dir() else []
            for entry in entries:
                try:
                    network_id = UUID(entry.name)
                except ValueError:
                    continue
                if network_id in known:
                    continue
                inst = self._instances.pop(network_id, None)
                if inst is not None:
                    self._stop(inst)
                self._kill_stale(network_id)
                shutil.rmtree(entry, ignore_errors=True)
                stopped.append(network_id)
        return stopped

    def stop_all(self) -> None:
        with self._lock:
            for inst in self._instances.values():
                self._stop(inst)
            self._instances.clear()

    def running(self, network_id: UUID) -> bool:
        with self._lock:
            inst = self._instances.get(network_id)
            return inst is not None and self._alive(inst)

    def pid(self, network_id: UUID) -> int | None:
        with self._lock:
            inst = self._instances.get(network_id)
            return inst.proc.pid if inst is not None and inst.proc is not None else None

    # -- processes ------------------------------------------------------------------------
    @staticmethod
    def _alive(inst: _Instance) -> bool:
        return inst.proc is not None and inst.proc.poll() is None

    def _check_reachable(self) -> None:
        """dnsmasq drops root for an unprivileged user, then reads the hosts file (at start
        and on SIGHUP): every folder above it must be world-traversable."""
        for folder in (self.root, *self.root.parents):
            if folder.exists() and not folder.stat().st_mode & 0o001:
                raise DhcpError(f"dnsmasq runs unprivileged and cannot reach {self.root}: "
                                f"{folder} is not world-traversable (chmod o+x)")

    def _start(self, inst: _Instance) -> None:
        network = inst.network
        self._check_reachable()
        self._kill_stale(network.id)
        pid_file = self.pid_file(network.id)
        pid_file.unlink(missing_ok=True)
        log = self.dir(network.id) / "start.err"
        with log.open("wb") as err:
            try:
                proc = subprocess.Popen(self.command(network), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=err,
                                        start_new_session=True)
            except OSError as e:
                raise DhcpError(f"cannot run {self.binary}: {e.strerror}") from None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                detail = _read(log).strip().splitlines()[-1:] or ["no message"]
                raise DhcpError(f"dnsmasq for network {network.name} on {network.bridge} exited "
                                f"{proc.returncode}: {detail[0][:300]}")
            if pid_file.exists() and _read(pid_file).strip():
                inst.proc = proc
                return
            time.sleep(0.02)
        proc.kill()
        proc.wait()
        raise DhcpError(f"dnsmasq for network {network.name} did not start within "
                        f"{START_TIMEOUT_S:.0f} s")

    @staticmethod
    def _stop(inst: _Instance) -> None:
        proc, inst.proc = inst.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _kill_stale(self, network_id: UUID) -> None:
        """A dnsmasq of ours (by its pid file and command line) not started by this process:
        left by an agent that was killed. Ended, so that exactly one serves the bridge."""
        pid_file = self.pid_file(network_id)
        try:
            pid = int(_read(pid_file).strip() or 0)
        except ValueError:
            return
        if pid <= 1 or any(i.proc is not None and i.proc.pid == pid for i in self._instances.values()):
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return  # gone
        if f"--pid-file={pid_file}".encode() not in cmdline:
            return  # the pid was reused by something else: never ours to kill
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.02)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)

    def _drop_stale_leases(self, network_id: UUID, hosts: Sequence[DhcpHost]) -> None:
        """Remove leases whose MAC and address are no longer a host (dnsmasq not running).
        A lease line is `expiry mac ip hostname client-id`."""
        lease_file = self.lease_file(network_id)
        lines = _read(lease_file).splitlines()
        wanted = {(h.mac, str(h.ip)) for h in hosts}
        kept = [line for line in lines
                if len(parts := line.split()) >= 3 and (parts[1].lower(), parts[2]) in wanted]
        if kept != lines:
            _write_atomically(lease_file, "".join(f"{line}\n" for line in kept))
