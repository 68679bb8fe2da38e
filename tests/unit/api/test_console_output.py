"""os-getConsoleOutput: the tail of the guest's serial console log, as Nova answers it
(`{"output": ...}`, `length` lines from the end, control characters dropped)."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import pytest

from agent.core.console import MAX_CONSOLE_BYTES, tail_lines
from tests.unit.api.conftest import ALICE, BOB, Env, fault
from tests.unit.fakes.consoles import FakeConsoleFiles

LOG = "SeaBIOS\r\nBooting from Hard Disk...\r\n\x1b[2Jline 3\r\n\x07debian-12-test login: "


def write_log(env: Env, tmp_path: Path, server_id: str, text: str | bytes) -> None:
    files = env.deps.consoles.files
    assert isinstance(files, FakeConsoleFiles)
    files.logs[UUID(server_id)] = text.encode() if isinstance(text, str) else text


async def console(env: Env, server_id: str, args: object, headers=ALICE):
    return await env.client.post(f"/v2.1/servers/{server_id}/action",
                                 json={"os-getConsoleOutput": args}, headers=headers)


async def test_whole_log_without_length_control_characters_dropped(env: Env, tmp_path):
    server_id = await env.create_active()
    write_log(env, tmp_path, server_id, LOG)
    for args in ({}, {"length": None}, {"length": -1}, {"length": "-1"}):
        r = await console(env, server_id, args)
        assert r.status_code == 200, r.text
        assert r.json() == {"output": "SeaBIOS\nBooting from Hard Disk...\n[2Jline 3\n"
                                      "debian-12-test login: "}


async def test_length_gives_the_last_lines_as_an_integer_or_a_string(env: Env, tmp_path):
    server_id = await env.create_active()
    write_log(env, tmp_path, server_id, "one\ntwo\nthree\n")
    assert (await console(env, server_id, {"length": 2})).json() == {"output": "three\n"}
    assert (await console(env, server_id, {"length": "3"})).json() == {"output": "two\nthree\n"}
    assert (await console(env, server_id, {"length": 0})).json() == {"output": ""}


@pytest.mark.parametrize("args", [{"length": -2}, {"length": "x"}, {"length": 1.5},
                                  {"lines": 3}, None])
async def test_bad_length_or_body_is_a_400(env: Env, tmp_path, args):
    server_id = await env.create_active()
    write_log(env, tmp_path, server_id, LOG)
    fault(await console(env, server_id, args), 400, "badRequest")


async def test_another_project_s_server_is_a_404_and_no_log_is_a_404(env: Env, tmp_path):
    server_id = await env.create_active()
    write_log(env, tmp_path, server_id, LOG)
    fault(await console(env, server_id, {}, headers=BOB), 404, "itemNotFound")
    other = await env.create_active()
    message = fault(await console(env, other, {}), 404, "itemNotFound")
    assert "does not have a console available" in message


async def test_only_the_last_100_kib_of_a_long_log_are_read(env: Env, tmp_path):
    server_id = await env.create_active()
    write_log(env, tmp_path, server_id, b"old\n" * 100_000 + b"x" * MAX_CONSOLE_BYTES)
    output = (await console(env, server_id, {})).json()["output"]
    assert output == "x" * MAX_CONSOLE_BYTES
    assert env.deps.consoles.files.reads == [MAX_CONSOLE_BYTES]  # type: ignore[attr-defined]


def test_tail_lines_cuts_as_nova_does():
    assert tail_lines("a\nb\nc", 2) == "b\nc"
    assert tail_lines("a\nb\n", 1) == ""
    assert tail_lines("a", 5) == "a"
    assert tail_lines("a\nb", None) == "a\nb"
