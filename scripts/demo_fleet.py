"""`make demo-fleet`: a fleet on one machine: the broker, a controller and three agents.

The broker is the RabbitMQ `make setup` installed and started. The controller serves the
Compute API for the fleet; each agent has its own host name, state dir and API socket
and takes its jobs from its queue (compute.<host>). Six servers of one project are
created in one request: the scheduler spreads them 2/2/2 (three hostIds); then they are
deleted and the demo shows that nothing is left on any host. Everything it made is
removed at the end.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent.cli.client import AgentClient, ApiError  # noqa: E402

STATE = Path("/var/tmp/compute-agent-demo-fleet")
IMAGE = json.loads((REPO / "vm-images/build/busybox-test/manifest.json").read_text())
HOSTS = ("demo-a", "demo-b", "demo-c")
WAIT_S = 600


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_configs(port: int, token: str) -> dict[str, Path]:
    """The controller's config and each agent's: their own state dirs and host names."""
    fleet_secret = STATE / "fleet.secret"
    fleet_secret.write_text(secrets.token_urlsafe(32))
    fleet_secret.chmod(0o600)
    common = (f'image_dirs = ["{REPO / "vm-images/build"}"]\nlog_format = "json"\n')
    configs = {"controller": STATE / "controller.toml"}
    configs["controller"].write_text(
        common + f'host = "controller"\nstate_dir = "{STATE / "controller"}"\n'
        f'api_listen = "127.0.0.1:{port}"\n'
        f'[[tokens]]\ntoken = "{token}"\nproject_id = "demo"\nuser_id = "demo"\nadmin = true\n'
        f'[amqp]\nheartbeat_s = 2\nfleet_token_file = "{fleet_secret}"\n')
    for host in HOSTS:
        configs[host] = STATE / f"{host}.toml"
        configs[host].write_text(
            common + f'host = "{host}"\nstate_dir = "{STATE / host}"\n'
            f'unix_socket_project = "demo"\n'
            f'[amqp]\nheartbeat_s = 2\ncontroller_url = "http://127.0.0.1:{port}"\n'
            f'fleet_token_file = "{fleet_secret}"\n')
    return configs


def start(name: str, config: Path, *command: str) -> subprocess.Popen[bytes]:
    log = (STATE / f"{name}.log").open("wb")
    return subprocess.Popen([sys.executable, "-m", "agent", "--config", str(config), *command],
                            cwd=REPO, stdout=log, stderr=log)


def wait_until(what: str, check: Callable[[], Any], timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if result := check():
                return result
        except ApiError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}; logs under {STATE}")


def hosts_up(client: AgentClient) -> bool:
    services = client.request("GET", "/os-services")["services"]
    return sorted(s["host"] for s in services if s["state"] == "up") == sorted(HOSTS)


def ours(client: AgentClient) -> list[dict]:
    return [s for s in client.list_servers() if s["name"].startswith("fleet-demo")]


def agent_views() -> dict[str, list[str]]:
    """Each agent's own answer (its local API, its own store): the servers it holds."""
    views = {}
    for host in HOSTS:
        local = AgentClient(str(STATE / host / "api.sock"))
        try:
            views[host] = sorted(s["name"] for s in local.list_servers())
        finally:
            local.close()
    return views


def leftovers(ids: set[str]) -> dict[str, list[str]]:
    """What any host still has of the demo's servers: domains, instance folders, rows."""
    domains = subprocess.run(["virsh", "-q", "list", "--all", "--name"], capture_output=True,
                             text=True, check=False).stdout.split()
    left = {"libvirt domains": [d for d in domains if d.removeprefix("instance-") in ids]}
    for host in HOSTS:
        instances = STATE / host / "instances"
        left[f"{host} instance folders"] = ([p.name for p in instances.iterdir()
                                             if not p.name.startswith("_")]
                                            if instances.exists() else [])
    for host, names in agent_views().items():
        left[f"{host} servers in its store"] = names
    return left


def main() -> int:
    if subprocess.run(["rabbitmq-diagnostics", "-q", "ping"], capture_output=True).returncode:
        raise SystemExit("RabbitMQ is not running: `make setup` installs and starts it")
    if STATE.exists():
        shutil.rmtree(STATE)
    STATE.mkdir(mode=0o755, parents=True)
    port, token = free_port(), secrets.token_urlsafe(16)
    configs = write_configs(port, token)
    say(f"Starting the controller (127.0.0.1:{port}) and agents {', '.join(HOSTS)}")
    procs = [start("controller", configs["controller"], "controller", "serve")]
    procs += [start(h, configs[h], "serve") for h in HOSTS]
    client = AgentClient(url=f"http://127.0.0.1:{port}", token=token)
    created = False
    try:
        wait_until("three hosts up", lambda: hosts_up(client), timeout=120)
        for s in client.request("GET", "/os-services")["services"]:
            print(f"{s['host']:8} {s['binary']} {s['status']} {s['state']}")

        say("POST /servers: six servers of project demo in one request (min_count 6)")
        client.create_server({"name": "fleet-demo", "imageRef": IMAGE["uuid"], "flavorRef": "1",
                              "min_count": 6, "max_count": 6})
        created = True
        wait_until("six servers ACTIVE or ERROR", lambda: len(ours(client)) == 6 and all(
            s["status"] in ("ACTIVE", "ERROR") for s in ours(client)))
        servers = ours(client)
        for s in sorted(servers, key=lambda s: s["name"]):
            print(f"{s['name']:14} {s['status']:7} host {s['OS-EXT-SRV-ATTR:host']:8} "
                  f"hostId {s['hostId'][:16]}...")
        spread = Counter(s["OS-EXT-SRV-ATTR:host"] for s in servers)
        print("servers per host:", dict(sorted(spread.items())),
              "| distinct hostIds:", len({s["hostId"] for s in servers}))
        for host, names in agent_views().items():
            print(f"{host}'s own API lists: {', '.join(names)}")
        if any(s["status"] != "ACTIVE" for s in servers):
            return 1

        say("DELETE the six servers")
        for s in servers:
            client.delete_server(s["id"])
        wait_until("every server deleted", lambda: not ours(client), timeout=300)
        created = False
        ids = {s["id"] for s in servers}
        wait_until("every host clean", lambda: not any(leftovers(ids).values()), timeout=120)
        print("left on any host (domains, instance folders):", leftovers(ids))
        return 0
    finally:
        if created:  # something failed: leave nothing behind
            for s in ours(client):
                try:
                    client.delete_server(s["id"])
                except ApiError as e:
                    print(f"cleanup: {e}")
            try:
                wait_until("cleanup", lambda: not ours(client), timeout=300)
            except SystemExit as e:
                print(e)
        client.close()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)
        if os.environ.get("KEEP_DEMO_STATE") is None:
            shutil.rmtree(STATE, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
