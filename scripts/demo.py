"""`make demo`: provision a real guest end to end through the agent, as a user would.

Starts the daemon on a scratch state dir, creates a server with a personality file
through the Compute API (the progress bar is the CLI's), logs in on the guest's serial
console with the returned adminPass and shows what the guest sees, then deletes the
server and shows that nothing is left. Everything it made is removed at the end.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent.cli.client import AgentClient  # noqa: E402
from agent.cli.servers import print_detail, wait_for  # noqa: E402
from tests.support.console import SerialConsole  # noqa: E402

STATE = Path("/var/tmp/compute-agent-demo")
IMAGE = json.loads((REPO / "vm-images/build/busybox-test/manifest.json").read_text())
MOTD = "Hello from compute-agent: this file was injected before first boot.\n"


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def start_daemon() -> subprocess.Popen[bytes]:
    if STATE.exists():
        shutil.rmtree(STATE)
    STATE.mkdir(mode=0o755, parents=True)
    config = STATE / "agent.toml"
    config.write_text(f'state_dir = "{STATE / "state"}"\n'
                      f'image_dirs = ["{REPO / "vm-images/build"}"]\n'
                      'unix_socket_project = "demo"\nlog_format = "json"\n')
    log = (STATE / "agent.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "agent", "--config", str(config), "serve"],
                            cwd=REPO, stdout=log, stderr=log)
    sock = STATE / "state" / "api.sock"
    for _ in range(300):
        if sock.exists():
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise SystemExit(f"daemon did not start; see {STATE / 'agent.log'}")


def main() -> int:
    say("Starting the daemon (state under /var/tmp/compute-agent-demo)")
    daemon = start_daemon()
    client = AgentClient(str(STATE / "state" / "api.sock"))
    server_id = None
    try:
        say("POST /servers: image busybox-test, flavor m1.tiny, /etc/motd injected")
        created = client.create_server({
            "name": "demo-1", "imageRef": IMAGE["uuid"], "flavorRef": "1",
            "metadata": {"purpose": "demo"},
            "personality": [{"path": "/etc/motd",
                             "contents": base64.b64encode(MOTD.encode()).decode()}]})
        server_id = created["id"]
        print(f"id {server_id}; adminPass returned once (not shown again by any GET)")
        status = wait_for(client, server_id, {"ACTIVE", "ERROR"}, timeout=300)
        say(f"GET /servers/{server_id}")
        print_detail(client.get_server(server_id))
        if status != "ACTIVE":
            return 1

        say("Logging in on the guest's serial console with the adminPass")
        d = STATE / "state" / "instances" / server_id
        with SerialConsole(d / "console.sock", d / "console.log") as con:
            con.wait_for(r"CA-GUEST booted", timeout=180)
            con.login("root", created["adminPass"])
            for cmd in ("id", "uname -sr", "cat /etc/motd", "ls -l /etc/motd*",
                        "grep '^root:' /etc/shadow | cut -c1-20"):
                _, out = con.run(cmd)
                print(f"guest# {cmd}\n{out.rstrip()}")

        say("DELETE the server")
        client.delete_server(server_id)
        wait_for(client, server_id, {"DELETED", "ERROR"}, timeout=120)
        gone = client.list_servers(**{"changes-since": "2000-01-01T00:00:00Z"})
        print("changes-since lists it as:", [s["status"] for s in gone if s["id"] == server_id])
        left = subprocess.run(["virsh", "-q", "list", "--all", "--uuid"], capture_output=True,
                              text=True, check=False).stdout.split()
        print("libvirt still has the domain:", server_id in left)
        print("guest folder still there:", d.exists())
        server_id = None
        return 0
    finally:
        if server_id:  # something failed: leave nothing behind
            try:
                client.delete_server(server_id)
                wait_for(client, server_id, {"DELETED", "ERROR"}, timeout=120)
            except Exception as e:  # the demo's own cleanup must not hide the first error
                print(f"cleanup: {e}")
        client.close()
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        if os.environ.get("KEEP_DEMO_STATE") is None:
            shutil.rmtree(STATE, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
