"""[amqp]: the broker's address and user, never its password (read from a root-only file);
without the section the agent is single-host and nothing of the broker is imported."""

from __future__ import annotations

import ast
import asyncio
import uuid
from pathlib import Path

import pytest

from agent.adapters.amqp_bus import AmqpBus, AmqpSettings, amqp_heartbeat, detection_window_s
from agent.config import AmqpConfig, load_config
from agent.errors import BusClosed, ConfigError
from agent.model.fleet import JobMessage
from agent.model.job import JobKind

AGENT = Path(__file__).resolve().parents[2] / "agent"


def config(tmp_path, text: str):  # type: ignore[no-untyped-def]
    file = tmp_path / "agent.toml"
    file.write_text(f'state_dir = "/tmp/ca-cfg"\nhost = "hv1"\n{text}')
    return load_config(file, environ={})


def test_without_an_amqp_section_the_agent_is_single_host(tmp_path):
    c = config(tmp_path, "")
    assert c.amqp is None and c.fleet_host == "hv1"


def test_the_amqp_section_is_read_with_its_defaults(tmp_path):
    c = config(tmp_path, '[amqp]\nurl = "amqp://agent@broker.example"\nheartbeat_s = 20\nhost = "hv9"\n')
    assert c.amqp is not None
    assert (c.amqp.url, c.amqp.vhost, c.amqp.heartbeat_s) == ("amqp://agent@broker.example", "compute", 20)
    assert c.fleet_host == "hv9"


@pytest.mark.parametrize(("url", "reason"), [
    ("amqp://agent:SECRET@broker", "must not hold a password"),
    ("http://agent@broker", "amqp://USER@HOST"),
    ("amqp://agent@broker/SECRETvhost", "vhost"),
    ("amqp:///", "amqp://USER@HOST"),
    ("amqp://broker:5672", "name the user"),
])
def test_a_url_with_a_password_or_not_amqp_is_refused_without_showing_it(tmp_path, url, reason):
    with pytest.raises(ConfigError, match=reason) as e:
        config(tmp_path, f'[amqp]\nurl = "{url}"\n')
    assert "SECRET" not in str(e.value)


def test_the_password_comes_from_the_file_and_never_shows_in_a_repr(tmp_path):
    secret = tmp_path / "amqp.secret"
    secret.write_text("s3cr3t-pw\n")
    s = AmqpSettings.from_config(AmqpConfig(url="amqps://agent@broker:5999", password_file=secret), "hv1")
    assert (s.password, s.user, s.broker_host, s.port, s.tls, s.host) == (
        "s3cr3t-pw", "agent", "broker", 5999, True, "hv1")
    assert "s3cr3t" not in repr(s)


@pytest.mark.parametrize("content", [None, "", "\n"])
def test_a_missing_or_empty_password_file_is_a_config_error(tmp_path, content):
    secret = tmp_path / "amqp.secret"
    if content is not None:
        secret.write_text(content)
    with pytest.raises(ConfigError, match="password_file"):
        AmqpSettings.from_config(AmqpConfig(password_file=secret), "hv1")


@pytest.mark.parametrize("interval_s", [7, 10, 15, 30, 60, 600])
def test_amqp_heartbeats_notice_a_silent_broker_within_the_heartbeat_interval(interval_s):
    h = amqp_heartbeat(interval_s)
    assert h >= 1 and detection_window_s(h) <= interval_s


def _amqp_imports(nodes) -> bool:  # type: ignore[no-untyped-def]
    for node in nodes:
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        if any(n.split(".")[0] in ("aio_pika", "aiormq") or n == "agent.adapters.amqp_bus"
               for n in names):
            return True
    return False


def test_only_the_amqp_adapter_imports_the_amqp_client():
    """Single-host mode must not need aio-pika: nothing else imports it or the adapter at
    module level; the composition root does, inside the function that wires fleet mode
    (tests/integration/test_lazy_imports.py proves a daemon's start loads none of it)."""
    top_level, lazily = set(), set()
    for path in AGENT.rglob("*.py"):
        tree = ast.parse(path.read_text())
        name = path.relative_to(AGENT).as_posix()
        if _amqp_imports(tree.body):
            top_level.add(name)
        elif _amqp_imports(ast.walk(tree)):
            lazily.add(name)
    assert top_level == {"adapters/amqp_bus.py", "adapters/amqp_probe.py"}  # the bus; doctor's probe
    assert lazily <= {"wiring_fleet.py", "wiring_controller.py", "controller.py"}


async def test_without_a_broker_publishes_wait_bounded_and_close_releases_them_with_bus_closed(tmp_path):
    """Never started, so never connected: publishes pause (none is dropped or failed) until
    the bus is closed; past max_pending_publishes, callers wait for a slot."""
    secret = tmp_path / "amqp.secret"
    secret.write_text("pw")
    bus = AmqpBus(AmqpSettings.from_config(AmqpConfig(password_file=secret, max_pending_publishes=1),
                                           "hv1"))
    jobs = [JobMessage(job_id=uuid.uuid4(), server_id=uuid.uuid4(), kind=JobKind.CREATE, seq=i)
            for i in (1, 2)]
    tasks = [asyncio.create_task(bus.publish_job("hv2", j)) for j in jobs]
    await asyncio.sleep(0.05)
    assert not any(t.done() for t in tasks) and not bus.connected
    assert bus._slots.locked()  # the second waits for the first's slot
    await bus.close()
    for t in tasks:
        with pytest.raises(BusClosed):
            await t


def test_the_controller_url_and_the_fleet_token_file_are_read(tmp_path):
    c = config(tmp_path, '[amqp]\ncontroller_url = "http://ctl.example:8780/"\n'
                         'fleet_token_file = "/srv/fleet.secret"\n')
    assert c.amqp is not None
    assert c.amqp.controller_url == "http://ctl.example:8780"  # no trailing slash: paths join
    assert c.amqp.fleet_token_file == Path("/srv/fleet.secret")
    assert config(tmp_path, "[amqp]\n").amqp.fleet_token_file == Path("/etc/compute-agent/fleet.secret")


@pytest.mark.parametrize(("url", "reason"), [
    ("amqp://ctl:8780", "http:// or https://"),
    ("http://", "http:// or https://"),
    ("http://admin:SECRET@ctl", "user info"),
    ("http://ctl/?token=SECRET", "query"),
])
def test_a_controller_url_that_is_not_plain_http_is_refused_without_showing_it(tmp_path, url, reason):
    with pytest.raises(ConfigError, match=reason) as e:
        config(tmp_path, f'[amqp]\ncontroller_url = "{url}"\n')
    assert "SECRET" not in str(e.value)
