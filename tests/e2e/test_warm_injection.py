"""With a warm appliance (injection_warm_spares), launched at start for the images present,
even the first build after a start is injected on a spare the warm appliance holds, and so
is the next: the guest still gets its file (0440 root:root), its password and its
flavor's disk size, and a stopped daemon leaves no appliance or spare."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import pytest

from tests.support.acting import ServerUnderTest, module_daemon
from tests.support.daemon import Daemon, processes_naming

pytestmark = pytest.mark.e2e
NOTE = "built on a warm spare\n"


@pytest.fixture(scope="module")
def agent() -> Iterator[Daemon]:
    with module_daemon("injection_warm_spares = 1") as d:
        yield d


def wait_log(daemon: Daemon, text: str, timeout: float, times: int = 1) -> None:
    deadline = time.monotonic() + timeout
    while daemon.log().count(text) < times:
        assert time.monotonic() < deadline, f"no {text} in the daemon log after {timeout}s"
        time.sleep(0.5)


def test_a_build_on_a_warm_spare_is_what_the_guest_expects(agent: Daemon):
    wait_log(agent, "injection.warm_ready", timeout=240)  # warmed at start: no build yet
    ServerUnderTest.create(agent, name="first")  # the first build after the start
    assert agent.log().count("injection.warm_used") == 1
    wait_log(agent, "injection.warm_ready", timeout=240, times=2)

    server = ServerUnderTest.create(agent, name="warm", adminPass="Warm-Passw0rd!", personality=[
        {"path": "/etc/warm.txt", "contents": base64.b64encode(NOTE.encode()).decode()}])
    assert agent.log().count("injection.warm_used") == 2
    with server.shell() as con:
        rc, out = con.run("cat /etc/warm.txt")
        assert (rc, out) == (0, NOTE)
        rc, out = con.run("ls -ln /etc/warm.txt")
        assert out.split()[0] == "-r--r-----" and out.split()[2:4] == ["0", "0"], out
        rc, out = con.run("cat /sys/block/vda/size")  # 512-byte sectors
        assert int(out) * 512 == 1024**3, out  # flavor 1: a 1 GiB disk

    spares = agent.state_dir / "instances" / "_spares"
    wait_log(agent, "injection.warm_ready", timeout=240, times=3)  # warm again after it
    assert processes_naming(spares)
    agent.stop()
    assert processes_naming(spares) == []
    assert not spares.exists()
