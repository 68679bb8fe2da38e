"""An idle daemon holds only the libraries its configuration uses (issue 15: its memory):
what the daemon's start imports (`python -m agent ... serve` goes through agent.cli, then
agent.app and a listener's uvicorn config) leaves out the libraries of features used
later or never: the console's WebSockets, keypairs' cryptography, port_security's
nftables, networks' pyroute2, injection's libguestfs, webhooks' httpx,
the fleet's aio-pika (single-host mode never loads it), FastAPI, which only writes
/openapi.json on its first request (agent/api/openapi_doc.py); and never uvicorn's command
line (click, multiprocessing) nor prometheus_client (agent/core/prometheus_text.py writes
/metrics: 1.3 MiB less). Each check runs in a fresh
interpreter (a subprocess: this one has imported them all)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import GUEST_SCRATCH
from tests.support.daemon import TOKENS, Daemon, processes_naming

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

# aio_pika/aiormq: the fleet's broker (issue 12), loaded only when [amqp] is configured.
LOADED_LATER = ("websockets", "cryptography", "nftables", "pyroute2", "guestfs", "httpx",
                "aio_pika", "aiormq", "fastapi")
# Not dependencies of the daemon (prometheus_client: only of its tests; the others:
# uvicorn's command line, agent/adapters/uvicorn_core.py): nothing may import them.
NEVER_LOADED = ("prometheus_client", "click", "multiprocessing", "uvicorn.main")

_DAEMON_START = """
import json, sys
import agent.cli, agent.app
from agent.config import HttpLimits
agent.app._listener(object(), HttpLimits()).config.load()
print(json.dumps(sorted(m for m in {names} if m in sys.modules)))
"""


def _loaded_after(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=REPO, check=True,
                         capture_output=True, text=True, timeout=120).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_the_daemons_start_does_not_import_the_libraries_of_features_not_used_yet():
    assert _loaded_after(_DAEMON_START.format(names=LOADED_LATER + NEVER_LOADED)) == []


def test_the_console_websocket_protocol_is_uvicorns_loaded_on_the_first_upgrade():
    code = """
import json, sys
from uvicorn.config import Config
from uvicorn.server import ServerState
from agent.adapters.http_guard import websocket_protocol
config = Config(object(), ws=websocket_protocol)
config.load()
before = "websockets" in sys.modules
proto = websocket_protocol(config=config, server_state=ServerState(), app_state={})
print(json.dumps([before, type(proto).__module__, "websockets" in sys.modules]))
"""
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=REPO, check=True,
                         capture_output=True, text=True, timeout=120).stdout
    assert json.loads(out.strip().splitlines()[-1]) == [
        False, "uvicorn.protocols.websockets.websockets_impl", True]



def test_the_daemons_entry_point_leaves_rich_out_though_installed(tmp_path: Path):
    """structlog imports rich whenever it is installed (the test extra brings it): the
    `serve` command marks it absent before structlog loads, on the path that both
    `python -m agent` and the `compute-agent` script of the systemd unit take (it used to
    be done in agent/__main__.py only, so the unit's daemon loaded rich: +3.5 MiB)."""
    bad = tmp_path / "agent.toml"
    bad.write_text("this is not = = toml\n")
    code = f"""
import importlib.util, json, sys
from agent.cli import main
installed = importlib.util.find_spec("rich") is not None
code = main(["--config", {str(bad)!r}, "serve"])
print(json.dumps([installed, code, "structlog" in sys.modules, sys.modules.get("rich") is not None]))
"""
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=REPO, check=True,
                         capture_output=True, text=True, timeout=120).stdout
    installed, status, structlog_loaded, rich_loaded = json.loads(out.strip().splitlines()[-1])
    if not installed:
        pytest.skip("rich is not installed here: nothing to leave out")
    assert (status, structlog_loaded, rich_loaded) == (2, True, False)


# Imported first by every interpreter started with its folder on PYTHONPATH: writes where
# FastAPI got imported from to $FASTAPI_IMPORT_MARK, the first time it is.
_WATCH_FASTAPI = """
import os, sys, traceback

class _WatchFastapi:
    def find_spec(self, name, path=None, target=None):
        if name == "fastapi":
            with open(os.environ["FASTAPI_IMPORT_MARK"], "w") as out:
                out.write("".join(traceback.format_stack()))
            sys.meta_path.remove(self)
        return None

sys.meta_path.insert(0, _WatchFastapi())
"""


def test_a_serving_daemon_imports_fastapi_only_for_its_first_openapi_document(tmp_path: Path):
    """The real daemon (`python -m agent serve`) answers requests, validation failures
    included, without FastAPI; the first GET /openapi.json imports it (and the same
    watcher sees that, so it would see an earlier import too)."""
    (tmp_path / "sitecustomize.py").write_text(_WATCH_FASTAPI)
    mark = tmp_path / "fastapi-imported"
    GUEST_SCRATCH.mkdir(mode=0o755, exist_ok=True)
    root = GUEST_SCRATCH / uuid.uuid4().hex[:12]
    (root / "state").mkdir(parents=True)
    daemon = Daemon(root / "state", env={
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]), "FASTAPI_IMPORT_MARK": str(mark)})
    try:
        daemon.start()
        with httpx.Client(base_url=daemon.url, timeout=30,
                          headers={"X-Auth-Token": TOKENS["alice"][0]}) as api:
            assert api.get("/v2.1/servers").status_code == 200
            assert api.get("/v2.1/servers/detail", params={"limit": "x"}).status_code == 400
            assert api.post("/v2.1/servers", json={"server": {}}).status_code == 400
            assert api.post("/v2.1/servers", content=b"{").status_code == 400
            assert api.get("/v2.0/networks").status_code == 200
            assert not mark.exists(), mark.read_text()
            document = api.get("/openapi.json")
            assert document.status_code == 200
            assert "/v2.1/servers" in document.json()["paths"]
        assert mark.exists()
    finally:
        daemon.kill()
        shutil.rmtree(root, ignore_errors=True)


# Imported first by every interpreter started with its folder on PYTHONPATH: the first
# import of guestfs in a process leaves a file named by that process's pid and its
# __main__ module, so that the daemon's own imports are told from its worker's.
_WATCH_GUESTFS = """
import os, sys

class _WatchGuestfs:
    def find_spec(self, name, path=None, target=None):
        if name == "guestfs":
            spec = getattr(sys.modules.get("__main__"), "__spec__", None)
            main = spec.name if spec is not None else "-"
            mark = os.path.join(os.environ["GUESTFS_IMPORT_MARKS"], f"{os.getpid()}-{main}")
            open(mark, "w").close()
            sys.meta_path.remove(self)
        return None

sys.meta_path.insert(0, _WatchGuestfs())
"""


def test_a_daemon_that_warmed_an_appliance_at_start_never_imported_guestfs(tmp_path: Path):
    """With warm spares on and an image present the daemon warms an appliance at start:
    libguestfs is loaded by its injection worker (the watcher sees that import, so it would
    see the daemon's too), never by the daemon itself."""
    (tmp_path / "sitecustomize.py").write_text(_WATCH_GUESTFS)
    marks = tmp_path / "marks"
    marks.mkdir()
    GUEST_SCRATCH.mkdir(mode=0o755, exist_ok=True)
    root = GUEST_SCRATCH / uuid.uuid4().hex[:12]
    (root / "state").mkdir(parents=True)
    daemon = Daemon(root / "state", extra_config="injection_warm_spares = 1\n", env={
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]),
        "GUESTFS_IMPORT_MARKS": str(marks)})
    try:
        daemon.start()
        spares = root / "state" / "instances" / "_spares"
        deadline = time.monotonic() + 300  # a launch under TCG on a busy box: generous
        while "injection.warm_ready" not in daemon.log():  # logged by the worker (stderr)
            assert time.monotonic() < deadline, "no warm appliance: " + daemon.log()[-2000:]
            time.sleep(0.5)
        assert processes_naming(spares), "the warm appliance runs"
        names = sorted(m.name for m in marks.iterdir())
        assert daemon.proc is not None
        assert not [n for n in names if n.startswith(f"{daemon.proc.pid}-")], names
        assert [n.split("-", 1)[1] for n in names] == ["agent.adapters.injector_worker"]
        assert daemon.stop() == 0
        assert processes_naming(spares) == []  # the worker closed its appliance
    finally:
        daemon.kill()
        shutil.rmtree(root, ignore_errors=True)
