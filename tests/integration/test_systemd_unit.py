"""The systemd unit verifies, scores as hardened, and the example config loads."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import load_config
from tests.conftest import REPO

UNIT = REPO / "systemd" / "compute-agent.service"


@pytest.fixture
def unit_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's binary (what make install links)."""
    binary = Path(sys.executable).parent / "compute-agent"
    text = UNIT.read_text().replace("/usr/local/bin/compute-agent", str(binary))
    copy = tmp_path / "compute-agent.service"
    copy.write_text(text)
    return copy


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze missing")
def test_unit_passes_systemd_analyze_verify(unit_copy):
    done = subprocess.run(["systemd-analyze", "verify", str(unit_copy)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == ""


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze missing")
def test_unit_is_hardened_by_systemd_analyze_security(unit_copy):
    done = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit_copy)],
                          capture_output=True, text=True, timeout=60, check=False)
    score = re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout)
    assert score, done.stdout[-500:]
    assert float(score.group(1)) <= 4.0  # "OK"; an unhardened unit scores 9.6 "UNSAFE"


def test_unit_is_type_notify_with_watchdog_and_restart():
    text = UNIT.read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                 "CapabilityBoundingSet=CAP_NET_ADMIN", "KillMode=mixed", "LimitNOFILE=16384"):
        assert line in text, line


def test_example_config_loads_and_matches_the_defaults():
    config = load_config(REPO / "etc" / "agent.toml.example", environ={})
    assert config.state_dir == Path("/var/lib/compute-agent")
    assert config.limits.max_personality_size == 10240
    assert config.api_socket_group == "compute-agent"


CONTROLLER_UNIT = REPO / "systemd" / "compute-agent-controller.service"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze missing")
def test_the_controllers_unit_verifies_and_is_hardened_further_without_any_capability(tmp_path):
    binary = Path(sys.executable).parent / "compute-agent"
    copy = tmp_path / "compute-agent-controller.service"
    copy.write_text(CONTROLLER_UNIT.read_text().replace("/usr/local/bin/compute-agent", str(binary)))
    done = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr
    done = subprocess.run(["systemd-analyze", "security", "--offline=true", str(copy)],
                          capture_output=True, text=True, timeout=60, check=False)
    score = re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout)
    assert score, done.stdout[-500:]
    assert float(score.group(1)) <= 2.5  # it owns no guest: no capability at all
    text = CONTROLLER_UNIT.read_text()
    assert "controller serve" in text and "Type=notify" in text and "WatchdogSec=" in text
    assert "CapabilityBoundingSet=\n" in text


def test_the_controllers_example_config_loads_with_its_broker_and_own_state():
    config = load_config(REPO / "etc" / "controller.toml.example", environ={})
    assert config.amqp is not None
    assert config.amqp.fleet_token_file == Path("/etc/compute-agent/fleet.secret")
    assert config.controller_database_path == Path("/var/lib/compute-agent-controller/controller.db")
    assert config.socket_path == Path("/run/compute-agent-controller/api.sock")
