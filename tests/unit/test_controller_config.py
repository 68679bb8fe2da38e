"""The controller's start refuses a config it cannot run with, naming the reason and never
a secret's content (issue 12)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import AmqpConfig, Config
from agent.errors import ConfigError
from agent.wiring_controller import build_controller, read_fleet_token


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """Short: a state dir's guest console sockets must fit 107 bytes (the config checks)."""
    with tempfile.TemporaryDirectory(prefix="ctlu-", dir="/tmp") as tmp:
        yield Path(tmp)


def test_a_controller_without_a_broker_section_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no \[amqp\] section"):
        build_controller(Config(state_dir=tmp_path / "state"))
    assert not (tmp_path / "state" / "controller.db").exists()


def test_a_missing_or_empty_fleet_token_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.secret"
    with pytest.raises(ConfigError, match=r"cannot read fleet_token_file .*nope\.secret"):
        build_controller(Config(state_dir=tmp_path / "s", amqp=AmqpConfig(fleet_token_file=missing)))
    empty = tmp_path / "empty.secret"
    empty.write_text(" \n")
    with pytest.raises(ConfigError, match="is empty"):
        read_fleet_token(empty)
    good = tmp_path / "good.secret"
    good.write_text("s3cret-token\n")
    assert read_fleet_token(good) == "s3cret-token"


def test_controller_serve_without_a_broker_section_exits_2_saying_why(tmp_path, capsys) -> None:
    config = tmp_path / "controller.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n')
    assert main(["--config", str(config), "controller", "serve"]) == 2
    assert "no [amqp] section" in capsys.readouterr().err
