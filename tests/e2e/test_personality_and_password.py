"""The spec's personality and password sections, checked from inside real guests: files
injected before first boot with mode 0440 root:root, the replaced file kept as
.bak.<timestamp>, and root logging in with the generated or given adminPass."""

from __future__ import annotations

import base64
import re

from tests.e2e.conftest import IMAGE_ID
from tests.support.console import ConsoleError, SerialConsole

FILES = {
    "/etc/motd": "Welcome to the injected motd\n",
    "/etc/agent/config.ini": "[main]\nkey = value\n",
    "/root/notes.txt": "ünïcødé notes ✓\n",
}


def console(daemon, server_id: str) -> SerialConsole:
    d = daemon.state_dir / "instances" / server_id
    return SerialConsole(d / "console.sock", d / "console.log")


def create(daemon, **extra) -> dict:
    with daemon.client() as api:
        r = api.post("/servers", json={"server": {"name": "inject", "imageRef": IMAGE_ID,
                                                  "flavorRef": "1", **extra}})
    assert r.status_code == 202, r.text
    return r.json()["server"]


def test_files_and_generated_password_as_the_guest_sees_them(daemon):
    created = create(daemon, personality=[
        {"path": p, "contents": base64.b64encode(c.encode()).decode()} for p, c in FILES.items()])
    server = daemon.wait_status(created["id"], {"ACTIVE", "ERROR"}, timeout=240)
    assert server["status"] == "ACTIVE", server.get("fault")
    with console(daemon, created["id"]) as con:
        con.wait_for(r"CA-GUEST booted", timeout=180)
        con.login("root", created["adminPass"])
        for path, contents in FILES.items():
            rc, out = con.run(f"ls -ln {path}")
            assert rc == 0, out
            mode, _links, uid, gid = out.split()[:4]
            assert (mode, uid, gid) == ("-r--r-----", "0", "0"), out
            rc, out = con.run(f"cat {path}")
            assert out == contents, out
        rc, out = con.run("ls -ln -d /etc/agent")
        assert out.split()[0] == "drwxr-xr-x" and out.split()[2:4] == ["0", "0"], out
        rc, out = con.run("ls /etc/ | grep motd.bak")
        [backup] = out.split()
        assert re.fullmatch(r"motd\.bak\.\d{10}\.\d{4}", backup)
        rc, out = con.run(f"cat /etc/{backup}")
        assert out == "compute-agent busybox test guest\n"
        rc, out = con.run("grep '^root:' /etc/shadow | cut -d: -f2 | cut -c1-3")
        assert out.strip() == "$6$"


def test_a_given_password_that_meets_the_policy_logs_in(daemon):
    password = "Given-Passw0rd!"
    created = create(daemon, adminPass=password)
    assert created["adminPass"] == password
    server = daemon.wait_status(created["id"], {"ACTIVE", "ERROR"}, timeout=240)
    assert server["status"] == "ACTIVE", server.get("fault")
    with console(daemon, created["id"]) as con:
        con.wait_for(r"CA-GUEST booted", timeout=180)
        con.login("root", password)
        rc, out = con.run("id -u")
        assert (rc, out.strip()) == (0, "0")


def test_a_password_below_the_policy_ends_in_error_with_root_locked(daemon):
    created = create(daemon, adminPass="weakpass")
    server = daemon.wait_status(created["id"], {"ACTIVE", "ERROR"}, timeout=240)
    assert server["status"] == "ERROR"
    assert "password policy" in server["fault"]["message"]
    assert "weakpass" not in str(server)
    with console(daemon, created["id"]) as con:
        con.wait_for(r"CA-GUEST booted", timeout=180)
        for password in ("weakpass", "ca-test-pw"):  # neither given nor image default
            try:
                con.login("root", password, timeout=20)
            except ConsoleError as e:  # busybox says "bad salt" for a locked ("!") hash
                assert re.search(r"Login incorrect|bad salt", e.tail), e.tail
                continue
            raise AssertionError("root could log in although its password was rejected")


def test_over_limit_and_non_text_personality_are_refused_and_create_nothing(daemon):
    too_big = base64.b64encode(b"x" * 10241).decode()
    gz = base64.b64encode(b"\x1f\x8b\x08\x00\x00\x00").decode()
    with daemon.client() as api:
        for files, status in (([{"path": "/a", "contents": too_big}], 403),
                              ([{"path": "/a", "contents": gz}], 400),
                              ([{"path": "/../a", "contents": "eA=="}], 400),
                              ([{"path": f"/f{i}", "contents": "eA=="} for i in range(6)], 403)):
            r = api.post("/servers", json={"server": {"name": "x", "imageRef": IMAGE_ID,
                                                      "flavorRef": "1", "personality": files}})
            assert r.status_code == status, r.text
        assert api.get("/servers").json()["servers"] == []
