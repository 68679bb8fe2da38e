"""A fleet on one machine for the fleet e2e tests (issue 12): a controller and N agents,
each agent with its own host name, state dir (so its own store, instances folder and API
socket) and bridges named after it, all on the machine's broker and libvirtd; started and
stopped as daemons (tests/support/daemon.py).

Config names as FLEET.md gives them: the agents' `[amqp] controller_url` is the
controller's API URL, and everyone reads one `[amqp] fleet_token_file` (0600, made here).
Host names and bridges carry a random run id, so two fleets (or another helper's tests)
on the machine never share a job queue (`compute.<host>`) or a bridge. Keep `base` short:
guests' console sockets live under each state dir (107 bytes at most).
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from agent.config import UNIX_PATH_MAX
from tests.support.daemon import Daemon, destroy_domains
from tests.support.netns import TestNet, kill_dnsmasq_under

AMQP_URL = "amqp://compute-agent@127.0.0.1:5672"
AMQP_PASSWORD_FILE = Path("/etc/compute-agent/amqp.secret")
BRIDGE_PREFIX = "catest"  # the test bridges' prefix (cleanup and other helpers know it)
ADMIN_TOKEN = "tok-admin-fleet-e2e"
# A controller's admin token (controller_extra): /os-services is for admins.
ADMIN_TOKEN_TOML = (f'[[tokens]]\ntoken = "{ADMIN_TOKEN}"\nproject_id = "admin"\n'
                    'user_id = "root"\nadmin = true\n')


def until(what: str, check: Callable[[], Any], timeout: float) -> Any:
    """check()'s first true answer, polled every 0.5 s; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout} s: {what}")


def hosts_up(admin: Any) -> set[str]:
    """The hosts /os-services shows up (`admin`: an httpx client with the admin token)."""
    return {s["host"] for s in admin.get("/os-services").json()["services"] if s["state"] == "up"}


@dataclass(frozen=True)
class FleetNetwork:
    """A network that spans the fleet: one id and subnet (the controller's IPAM), a bridge
    of its own on each agent. With `segment`, the agents' bridges form one L2 segment as on
    real hosts: each bridge's uplink (`physical_interface`) is a veth into a test switch;
    agent 1 is the gateway host, agent i > 1 has `host_address` = the subnet's i-th address,
    and every config reserves those."""

    name: str
    cidr: IPv4Network
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    segment: bool = False

    def host_address(self, host_index: int) -> str | None:
        """Agent `host_index`'s own address (None: it is the gateway host, or no segment)."""
        return str(self.cidr[host_index]) if self.segment and host_index > 1 else None

    def toml(self, bridge: str, agents: int = 0, host_index: int = 0,
             uplink: str | None = None) -> str:
        text = (f'[[networks]]\nid = "{self.id}"\nname = "{self.name}"\nbridge = "{bridge}"\n'
                f'cidr = "{self.cidr}"\n')
        if self.segment:
            reserved = ", ".join(f'"{self.host_address(i)}"' for i in range(2, agents + 1))
            text += f"reserved_addresses = [{reserved}]\n"
            if uplink is not None:
                text += f'physical_interface = "{uplink}"\n'
            if (own := self.host_address(host_index)) is not None:
                text += f'host_address = "{own}"\n'
        return text


def bridge_name(run: str, host_index: int, network_index: int) -> str:
    """catest<run>h<host>n<network>: 15 bytes at most (IFNAMSIZ) for run ids of 4."""
    name = f"{BRIDGE_PREFIX}{run}h{host_index}n{network_index}"
    if len(name) > 15:
        raise ValueError(f"bridge name {name} is longer than 15 bytes: fewer hosts or networks")
    return name


class Fleet:
    """`with Fleet(base, agents=3) as fleet:` starts the controller, then the agents; on exit
    stops the agents, then the controller (SIGTERM, SIGKILL if one does not exit)."""

    def __init__(self, base: Path, agents: int = 3, networks: tuple[FleetNetwork, ...] = (),
                 *, vhost: str = "compute", amqp_url: str = AMQP_URL,
                 amqp_password_file: Path = AMQP_PASSWORD_FILE, heartbeat_s: int = 10,
                 controller_extra: str = "", agent_extra: str = "") -> None:
        if not 1 <= agents <= 9:
            raise ValueError("agents: 1..9")
        longest = base / "h9" / "instances" / ("0" * 36) / "console.sock"
        if len(str(longest).encode()) > UNIX_PATH_MAX:
            raise ValueError(f"{base} is too long for guests' console sockets: use guest_dir")
        base.mkdir(parents=True, exist_ok=True)
        self.base = base
        self.run = secrets.token_hex(2)
        self.networks = networks
        self.token_file = base / "fleet.secret"
        self.token_file.touch(mode=0o600)
        self.token_file.chmod(0o600)
        self.token_file.write_text(secrets.token_urlsafe(32) + "\n")

        def amqp(extra: str) -> str:
            return (f'[amqp]\nurl = "{amqp_url}"\nvhost = "{vhost}"\n'
                    f'password_file = "{amqp_password_file}"\nheartbeat_s = {heartbeat_s}\n'
                    f'fleet_token_file = "{self.token_file}"\n{extra}')

        controller_dir = base / "ctl"
        self.controller = Daemon(controller_dir, (
            f'host = "ctl-{self.run}"\napi_socket = "{controller_dir / "api.sock"}"\n{controller_extra}\n'
            + "".join(n.toml(bridge_name(self.run, 0, j), agents) for j, n in enumerate(networks))
            + amqp("")), command=("controller", "serve"))
        self.hosts = [f"hv{i}-{self.run}" for i in range(1, agents + 1)]
        self.agents: dict[str, Daemon] = {}
        # The test links (switches, uplinks, the agents' bridges) carry the run id: cleaned
        # up by it, whatever the test did.
        self.net = TestNet(tag=self.run)
        for i, host in enumerate(self.hosts, start=1):
            state_dir = base / f"h{i}"  # short: console socket paths are bounded
            self.net.bridges.extend(bridge_name(self.run, i, j) for j in range(len(networks)))
            self.agents[host] = Daemon(state_dir, (
                f'host = "{host}"\napi_socket = "{state_dir / "api.sock"}"\n{agent_extra}\n'
                + "".join(n.toml(bridge_name(self.run, i, j), agents, i,
                                 self.net.name(f"u{i - 1}n{j}") if n.segment else None)
                          for j, n in enumerate(networks))
                + amqp(f'controller_url = "{self.controller.url}"\n')))

    @property
    def daemons(self) -> list[Daemon]:
        return [self.controller, *self.agents.values()]

    def bridges(self, host: str) -> list[str]:
        """The bridges an agent's config names (one per network, in order)."""
        i = self.hosts.index(host) + 1
        return [bridge_name(self.run, i, j) for j in range(len(self.networks))]

    def start(self, timeout: float = 60) -> Fleet:
        for j, network in enumerate(self.networks):
            if network.segment:
                self.net.switch(j, len(self.hosts))
        self.controller.start(timeout=timeout)
        for agent in self.agents.values():
            agent.start(timeout=timeout)
        return self

    def stop(self, timeout: float = 30) -> None:
        """Agents first (they talk to the controller), then the controller; a daemon that
        does not stop is killed, and the others still get stopped."""
        for daemon in [*self.agents.values(), self.controller]:
            if daemon.proc is None or daemon.proc.poll() is not None:
                continue
            try:
                daemon.stop(timeout)
            except Exception:  # did not exit in time: no daemon outlives the fleet
                daemon.kill()
        if self.networks:  # what a failed test may leave: guests, dnsmasq, taps, links
            for agent in self.agents.values():
                destroy_domains(agent.state_dir)
                kill_dnsmasq_under(agent.state_dir)
            self.net.cleanup()

    def __enter__(self) -> Fleet:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *_exc: object) -> None:
        self.stop()
