"""A real distribution guest: Debian 12 built like a cloud image (vm-images/build_debian.py:
MBR partition table, ext4 root partition, extlinux, systemd, networkd DHCP, qemu-ga, root
locked), booting from its own disk with no kernel beside it. One daemon, one network and
ONE guest serve the whole module, in file order (systemd under TCG boots in about a
minute, so every wait is generous and bounded):

create with a personality file -> boots from disk -> login with the adminPass -> the
file is 0440 root:root and the image's own kept as .bak.<time.time()> -> /etc/shadow is
still root:shadow 0640 -> the guest's DHCP address is the API's -> `ssh -i` with the
keypair named at create logs in from a test namespace -> os-getConsoleOutput ->
`reboot` typed in the guest (stays ACTIVE, no SHUTOFF) -> changePassword online (qemu-ga)
-> offline with qemu-ga stopped -> rebuild onto busybox-test and back -> `compute-agent
server console` (and refused for another project) -> `poweroff` typed in the guest ->
SHUTOFF.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.model.network import Network
from tests.conftest import IMAGES_DIR, REPO
from tests.e2e.test_openstack_clients import Recorded, nova, sdk
from tests.support.acting import IMAGE_ID as BUSYBOX_ID
from tests.support.acting import ServerUnderTest, module_daemon, query, virsh
from tests.support.console import SHELL_PROMPT, LoginFailed, SerialConsole
from tests.support.daemon import TOKENS, Daemon
from tests.support.netns import TestNet, kill_dnsmasq_under

# Deprecations raised inside openstacksdk 4.x itself, not by the calls made here.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:The _compute_attributes method is deprecated"),
    pytest.mark.filterwarnings("ignore:The 'service_type' parameter is unnecesary"),
]

MANIFEST = IMAGES_DIR / "debian-12-test" / "manifest.json"
DEBIAN_ID = "7f6a3c2e-1d4b-4e8f-a9c0-3b5d7e9f1a2c"  # fixed by vm-images/build_debian.py
BOOT_S = 420  # systemd under TCG on a loaded 2-CPU host: a minute or two; bounded
MOTD = "injected by compute-agent e2e\n"
GUEST_PING = '{"execute": "guest-ping"}'

if not MANIFEST.exists():
    pytest.skip("the debian-12-test image is not built (make images)", allow_module_level=True)


@dataclass
class Env:
    daemon: Daemon
    net: Network
    server: ServerUnderTest
    testnet: TestNet
    ssh_key: str  # the private key file of the keypair the server was created with

    def console(self) -> SerialConsole:
        d = self.server.dir
        return SerialConsole(d / "console.sock", d / "console.log")

    def login(self, password: str | None = None, timeout: float = BOOT_S) -> SerialConsole:
        con = self.console().connect()
        try:
            con.login("root", password or self.server.password, timeout=timeout)
        except Exception:
            con.close()
            raise
        return con


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    testnet = TestNet()
    octet = 100 + int(testnet.tag, 16) % 100
    net = testnet.network(0, f"10.214.{octet}.0/24")
    config = (f'[[networks]]\nid = "{net.id}"\nname = "{net.name}"\nbridge = "{net.bridge}"\n'
              f'cidr = "{net.cidr}"\n')
    keys = tempfile.TemporaryDirectory()
    key = f"{keys.name}/id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    try:
        with module_daemon(config) as daemon:
            with daemon.client() as api:
                r = api.post("/os-keypairs", json={"keypair": {
                    "name": "e2e", "public_key": Path(f"{key}.pub").read_text()}})
                assert r.status_code == 200, r.text
                r = api.post("/servers", json={"server": {
                    "name": "debian", "imageRef": DEBIAN_ID, "flavorRef": "2", "key_name": "e2e",
                    "adminPass": "Debian-Passw0rd", "networks": [{"uuid": str(net.id)}],
                    "personality": [{"path": "/etc/motd",
                                     "contents": base64.b64encode(MOTD.encode()).decode()}]}})
            assert r.status_code == 202, r.text
            server = ServerUnderTest(daemon, r.json()["server"]["id"], "Debian-Passw0rd")
            server.wait("ACTIVE", timeout=600)
            yield Env(daemon, net, server, testnet, key)
            kill_dnsmasq_under(daemon.state_dir)
    finally:
        testnet.cleanup()
        keys.cleanup()


def agent_answers(server_id: str) -> bool:
    answer = virsh("qemu-agent-command", server_id, GUEST_PING).strip()
    return bool(answer) and json.loads(answer) == {"return": {}}


def wait_agent(server_id: str, timeout: float = BOOT_S) -> None:
    deadline = time.monotonic() + timeout
    while not agent_answers(server_id):
        assert time.monotonic() < deadline, f"qemu-ga silent for {timeout}s"
        time.sleep(2)


def uptime(con: SerialConsole) -> float:
    rc, out = con.run("cat /proc/uptime")
    assert rc == 0, out
    return float(out.split()[0])


def stat(con: SerialConsole, path: str) -> str:
    rc, out = con.run(f"stat -c '%a %U:%G' {path}")
    assert rc == 0, out
    return out.strip()


def type_at_prompt(con: SerialConsole, command: str) -> None:
    """Type a command once bash shows its prompt: typed while readline starts, bash
    shows the line but may not run it."""
    con.wait_for(SHELL_PROMPT, timeout=60)
    con.sendline(command)
    con.wait_for(re.escape(command) + r"\r?\n", timeout=30)  # echoed and entered


def test_it_boots_from_its_own_disk_and_takes_the_admin_password(env: Env):
    xml = subprocess.run(["virsh", "dumpxml", env.server.id], capture_output=True, text=True,
                         check=True).stdout
    assert "<kernel>" not in xml and "<initrd>" not in xml
    assert re.search(r"<boot dev=.hd.\s*/>", xml)
    with env.login() as con:
        rc, out = con.run("grep PRETTY_NAME /etc/os-release; findmnt -no SOURCE /")
        assert rc == 0 and "Debian GNU/Linux 12" in out and "/dev/vda1" in out, out
    log = (env.server.dir / "console.log").read_text(errors="replace")
    assert "SYSLINUX" in log  # the disk's own boot loader ran


def test_personality_file_is_0440_root_and_the_image_s_file_is_kept(env: Env):
    with env.login() as con:
        assert stat(con, "/etc/motd") == "440 root:root"
        rc, out = con.run("cat /etc/motd")
        assert (rc, out.strip()) == (0, MOTD.strip())
        rc, out = con.run("ls /etc/ | grep '^motd.bak'")
        (backup,) = out.split()
        assert rc == 0
        assert re.fullmatch(r"motd\.bak\.\d+(\.\d+)?", backup), backup  # time.time()
        assert abs(float(backup[len("motd.bak."):]) - time.time()) < 3600
        rc, out = con.run(f"cat /etc/{backup}")
        assert rc == 0 and "Debian GNU/Linux" in out  # the image's own motd


def test_shadow_keeps_its_owner_group_and_mode(env: Env):
    with env.login() as con:
        assert stat(con, "/etc/shadow") == "640 root:shadow"


def test_the_guest_s_dhcp_address_is_the_api_s(env: Env):
    (nic,) = env.server.show()["addresses"][env.net.name]
    with env.login() as con:
        rc, out = con.run("for i in $(seq 120); do ip -4 -o addr show scope global | "
                          "grep -q inet && break; sleep 1; done; ip -4 -o addr show scope global",
                          timeout=150)
        assert rc == 0
        assert re.findall(r"inet (\S+)/", out) == [nic["addr"]], out


def test_ssh_with_the_keypair_named_at_create_logs_in_as_root(env: Env):
    """The key went into root's authorized_keys with modes sshd's StrictModes accepts:
    sshd lets the key's holder in from a test namespace on the guest's network."""
    (nic,) = env.server.show()["addresses"][env.net.name]
    ns, _ = env.testnet.namespace_on(env.net)
    ssh = ["ip", "netns", "exec", ns, "ssh", "-i", env.ssh_key, "-o", "BatchMode=yes",
           "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
           "-o", "ConnectTimeout=10", f"root@{nic['addr']}", "id -u; stat -c '%a %U' /root/.ssh"]
    deadline = time.monotonic() + BOOT_S  # sshd makes its host keys at first start
    while True:
        done = subprocess.run(ssh, capture_output=True, text=True, timeout=60)
        if done.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "700", "root"], done.stdout


def test_console_output_through_the_api_is_the_serial_log_tail(env: Env):
    with env.daemon.client() as api:
        r = api.post(f"/servers/{env.server.id}/action", json={"os-getConsoleOutput": {}})
        assert r.status_code == 200, r.text
        whole = r.json()["output"]
        r = api.post(f"/servers/{env.server.id}/action",
                     json={"os-getConsoleOutput": {"length": 3}})
        tail = r.json()["output"]
    with env.daemon.client("bob") as api:
        other = api.post(f"/servers/{env.server.id}/action", json={"os-getConsoleOutput": {}})
    assert "SYSLINUX" in whole and "debian-12-test login:" in whole
    assert "\r" not in whole and "\x1b" not in whole
    assert len(tail.split("\n")) <= 3 and whole.endswith(tail)
    assert other.status_code == 404
    # What `openstack console log show --lines 3` and `nova console-log --length 3` call.
    rec = Recorded(env.daemon, "alice")
    assert sdk(rec).compute.get_server_console_output(env.server.id, length=3)["output"] == tail
    assert nova(rec).servers.get_console_output(env.server.id, length=3) == tail


def test_reboot_typed_in_the_guest_stays_active_without_shutoff(env: Env):
    seq = env.server.last_seq()
    with env.login() as con:
        type_at_prompt(con, "reboot")
    asked = time.monotonic()
    statuses = set()
    with env.console().connect() as con:
        con.drain()
        deadline = time.monotonic() + BOOT_S
        while True:  # the API while the guest goes down and comes back
            statuses.add(env.server.show()["status"])
            try:
                con.wait_for(r"login: ?$", timeout=5)
                break
            except TimeoutError:
                assert time.monotonic() < deadline, "no login prompt after reboot"
    with env.login() as con:
        assert uptime(con) < time.monotonic() - asked
    assert statuses == {"ACTIVE"}
    assert env.server.statuses_since(seq) == []
    assert query(env.daemon, "SELECT seq FROM events WHERE server_id = ? AND seq > ?",
                 env.server.id, seq) == []


def test_change_password_online_through_the_guest_agent(env: Env):
    wait_agent(env.server.id)
    started_as = virsh("domid", env.server.id).strip()
    env.server.act({"changePassword": {"adminPass": "Online-Passw0rd"}})
    env.server.wait("ACTIVE")
    assert virsh("domid", env.server.id).strip() == started_as  # no reboot
    with env.login("Online-Passw0rd") as con:
        assert stat(con, "/etc/shadow") == "640 root:shadow"
    with pytest.raises(LoginFailed), env.login("Debian-Passw0rd", timeout=120):
        pass
    env.server.password = "Online-Passw0rd"


def test_change_password_offline_with_the_agent_stopped(env: Env):
    with env.login() as con:
        rc, out = con.run("systemctl stop qemu-guest-agent; systemctl is-active qemu-guest-agent")
        assert (rc, out.strip()) == (3, "inactive"), out  # is-active: 3 when stopped
    assert not agent_answers(env.server.id)
    started_as = virsh("domid", env.server.id).strip()
    env.server.act({"changePassword": {"adminPass": "Offline-Passw0rd"}})
    env.server.wait("ACTIVE", timeout=BOOT_S)
    assert virsh("domid", env.server.id).strip() != started_as  # shut down, written, started
    with env.login("Offline-Passw0rd") as con:
        assert stat(con, "/etc/shadow") == "640 root:shadow"  # libguestfs kept them
    env.server.password = "Offline-Passw0rd"


def test_rebuild_onto_busybox_and_back(env: Env):
    env.server.act({"rebuild": {"imageRef": BUSYBOX_ID, "adminPass": "Busybox-Passw0rd"}})
    assert env.server.wait("ACTIVE", timeout=BOOT_S)["image"]["id"] == BUSYBOX_ID
    with env.login("Busybox-Passw0rd", timeout=180) as con:
        rc, out = con.run("cat /etc/os-release")
        assert rc == 0 and "compute-agent busybox test guest" in out
    env.server.act({"rebuild": {"imageRef": DEBIAN_ID, "adminPass": "Again-Passw0rd"}})
    assert env.server.wait("ACTIVE", timeout=BOOT_S)["image"]["id"] == DEBIAN_ID
    xml = virsh("dumpxml", env.server.id)
    assert "<kernel>" not in xml
    with env.login("Again-Passw0rd") as con:
        rc, out = con.run("grep PRETTY_NAME /etc/os-release")
        assert rc == 0 and "Debian GNU/Linux 12" in out
        assert stat(con, "/etc/shadow") == "640 root:shadow"
    env.server.password = "Again-Passw0rd"


def console_cli(env: Env, user: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "agent", "--config", str(env.daemon.config_file), "server",
         "--url", env.daemon.url, "--token", TOKENS[user][0], "console", env.server.id],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_server_console_attaches_the_terminal_and_ctrl_bracket_leaves(env: Env):
    proc = console_cli(env, "alice")
    seen = bytearray()

    def read() -> None:
        while chunk := proc.stdout.read1(4096):  # type: ignore[union-attr]
            seen.extend(chunk)

    threading.Thread(target=read, daemon=True).start()
    try:
        def type_until(keys: bytes, wanted: bytes, every: float) -> None:
            deadline = time.monotonic() + 120
            while wanted not in seen:
                assert time.monotonic() < deadline, bytes(seen[-500:])
                proc.stdin.write(keys)  # type: ignore[union-attr]
                proc.stdin.flush()  # type: ignore[union-attr]
                time.sleep(every)

        type_until(b"\r", b"debian-12-test", 2)  # a prompt: the getty's or a root shell's
        if b"login:" not in seen:  # the earlier tests left root logged in: log it out
            type_until(b"exit\r", b"login:", 60)  # once (again only if nothing came)
        proc.stdin.write(b"\x1d")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        assert proc.wait(timeout=30) == 0, proc.stderr.read()  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert b"debian-12-test login:" in seen
    other = console_cli(env, "bob")
    _out, err = other.communicate(timeout=60)
    assert other.returncode == 1
    assert b"HTTP 404" in err and b"could not be found" in err


def test_poweroff_typed_in_the_guest_is_shutoff(env: Env):
    seq = env.server.last_seq()
    with env.login() as con:
        type_at_prompt(con, "poweroff")
    env.server.wait("SHUTOFF", timeout=180)
    assert env.server.statuses_since(seq) == ["SHUTOFF"]
