"""Figure 6: the daemon's memory and its start-up reconcile.

- Resident memory (VmRSS from /proc/<pid>/status) of the real daemon idle (no server),
  once the appliance it warmed at start was released unused (injection_warm_idle_s), and
  right after its start, the appliance warm; and with 1,000 servers in its store (after
  5 GET /servers/detail of all of them),
  against a bare Python process that imports the same modules (`agent.app`: Starlette,
  uvicorn, libvirt, pydantic, structlog; FastAPI only writes /openapi.json, on its first
  request) and does nothing: the floor.
- The start-up reconcile with N servers whose domains exist: libvirt's test driver
  stands in for QEMU (`libvirt_uri = "test:///<node.xml>"`, a node file with N running
  domains carrying the agent's metadata and uuids of N servers seeded in the store).
  The agent's number is process start to `agent.ready`, against the same with no server
  and an empty node; the reconcile alone is the `reconcile_s` of the `agent.ready` line.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx

from agent.adapters.domain_xml import METADATA_NS
from bench.context import REPO, Context
from bench.report import Figure, progress
from bench.scratch import Scratch
from bench.seeded import (
    log_events,
    rss_mib,
    seeded_daemon,
    set_top_level,
    settle_rss,
    use_libvirt,
    wait_logged,
    wait_ready,
)
from bench.timing import median

SERVERS = 1000
READS = 5
START_RUNS = 3
# The idle daemon's warm appliance is released after this (the default 300 s, shortened
# so the bench need not wait: the state measured is the same), and its launch under TCG
# (with other work on the host) is over well within WARM_TIMEOUT_S.
WARM_IDLE_S = 8.0
WARM_TIMEOUT_S = 300.0
# What the daemon imports before its own code runs: rich marked absent as `serve` does
# (agent/cli), then the composition root; and the same libraries without any agent code.
_FLOOR = "import sys\nsys.modules.setdefault('rich', None)\nimport agent.app\n"
# uvicorn as the daemon loads it: without its command line (agent/adapters/uvicorn_core.py,
# which imports no other agent module).
_LIBRARIES = ("import sys\nsys.modules.setdefault('rich', None)\n"
              "import asyncio, sqlite3, tomllib, structlog, pydantic, starlette.applications, re2\n"
              "import agent.adapters.uvicorn_core, libvirt, libvirtaio\n")
_REPORT = ("\nfor line in open('/proc/self/status'):\n"
           "    if line.startswith(('VmRSS:', 'RssAnon:')): print(int(line.split()[1]) / 1024)\n")


def floor_rss(code: str = _FLOOR) -> tuple[float, float]:
    """(VmRSS, RssAnon) in MiB of a bare Python process that runs `code` and nothing else."""
    out = subprocess.run([sys.executable, "-c", code + _REPORT], cwd=REPO, capture_output=True,
                         text=True, check=True, timeout=120).stdout.split()
    return float(out[0]), float(out[1])


def daemon_rss(ctx: Context, name: str, servers: int, images: bool = True) -> tuple[float, float]:
    daemon, _ = seeded_daemon(ctx.scratch, name, servers, ctx.image.uuid)
    if not images:  # no image: no appliance warmed at start, libguestfs never loaded
        config = daemon.config.read_text()
        daemon.config.write_text(re.sub(r"(?m)^image_dirs = .*$", "image_dirs = []", config))
    with daemon, daemon.client() as api:
        wait_ready(daemon)
        for _ in range(READS if servers else 0):
            r = api.get("/servers/detail")
            if r.status_code != 200:
                raise RuntimeError(f"GET /servers/detail answered {r.status_code}")
        return settle_rss(daemon.pid), rss_mib(daemon.pid, "RssAnon")


def worker_rss(daemon_pid: int) -> tuple[float, float]:
    """(VmRSS, RssAnon) of the daemon's injection worker (its python child holding
    libguestfs and the warm appliance's handle; QEMU is the worker's child, not counted);
    (0, 0) when it has none."""
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or b"injector_worker" not in (proc / "cmdline").read_bytes():
                continue
            status = (proc / "status").read_text()
        except OSError:
            continue  # gone meanwhile
        if f"\nPPid:\t{daemon_pid}\n" in status:
            return rss_mib(int(proc.name)), rss_mib(int(proc.name), "RssAnon")
    return 0.0, 0.0


def idle_rss(ctx: Context) -> dict[str, tuple[float, float]]:
    """(VmRSS, RssAnon) of one idle daemon (no server) as its warm appliance comes and
    goes: "start" at agent.ready + 2 s (the appliance warmed at start launching or
    up), "warm" 2 s after it is ready (held), "released" 2 s after it was released
    unused; and of its injection worker in each state ("worker-start", ...)."""
    daemon, _ = seeded_daemon(ctx.scratch, "mem-idle", 0, ctx.image.uuid)
    set_top_level(daemon, "injection_warm_idle_s", WARM_IDLE_S)
    found: dict[str, tuple[float, float]] = {}
    with daemon:
        wait_ready(daemon)
        pid = daemon.pid
        found["start"] = settle_rss(pid), rss_mib(pid, "RssAnon")
        found["worker-start"] = worker_rss(pid)
        wait_logged(daemon, "injection.warm_ready", WARM_TIMEOUT_S)
        found["warm"] = settle_rss(pid), rss_mib(pid, "RssAnon")
        found["worker-warm"] = worker_rss(pid)
        if log_events(daemon, "injection.warm_released"):
            raise RuntimeError("the warm appliance was released before it was measured held")
        wait_logged(daemon, "injection.warm_released", WARM_IDLE_S + WARM_TIMEOUT_S)
        found["released"] = settle_rss(pid), rss_mib(pid, "RssAnon")
        found["worker-released"] = worker_rss(pid)
    return found


def test_node(path: Path, instances_dir: Path, ids: list[uuid.UUID]) -> str:
    """A libvirt test-driver node file with one running domain per id; its URI."""
    node = ET.Element("node")
    for i, sid in enumerate(ids):
        dom = ET.SubElement(node, "domain", type="test")
        ET.SubElement(dom, "name").text = f"bench-test-{i:04d}"
        ET.SubElement(dom, "uuid").text = str(sid)
        ET.SubElement(dom, "memory", unit="MiB").text = "256"
        ET.SubElement(dom, "vcpu").text = "1"
        os_el = ET.SubElement(dom, "os")
        ET.SubElement(os_el, "type").text = "hvm"
        meta = ET.SubElement(ET.SubElement(dom, "metadata"), f"{{{METADATA_NS}}}instance")
        ET.SubElement(meta, f"{{{METADATA_NS}}}property", name="server_id").text = str(sid)
        disk = ET.SubElement(ET.SubElement(dom, "devices"), "disk", type="file", device="disk")
        ET.SubElement(disk, "source", file=str(instances_dir / str(sid) / "disk.qcow2"))
        ET.SubElement(disk, "target", dev="vda", bus="virtio")
    ET.ElementTree(node).write(path, encoding="unicode")
    return f"test://{path}"


def start_to_ready(scratch: Scratch, ctx: Context, name: str, servers: int) -> tuple[float, float]:
    """(seconds from spawn to agent.ready, reconcile_s it logged) with `servers` servers
    and as many running test-driver domains."""
    daemon, ids = seeded_daemon(scratch, name, servers, ctx.image.uuid)
    uri = test_node(scratch.path(f"{name}-node.xml"), daemon.instances_dir, ids)
    use_libvirt(daemon, uri)
    started = time.monotonic()
    with daemon:
        entry = wait_ready(daemon)
        took = time.monotonic() - started
        with httpx.Client(base_url=daemon.url + "/v2.1", timeout=60,
                          headers={"X-Auth-Token": daemon.token}) as api:
            listed = api.get("/servers/detail").json()["servers"]
    unknown = [s for s in listed if s["status"] != "ACTIVE"]
    if unknown:
        raise RuntimeError(f"{len(unknown)} server(s) not ACTIVE after the reconcile: "
                           f"{unknown[0]['status']}")
    return took, float(entry.get("reconcile_s", "nan"))


def memory(ctx: Context, domains: int, command: str) -> list[Figure]:
    floors = [floor_rss() for _ in range(3)]
    floor, floor_anon = median([f[0] for f in floors]), median([f[1] for f in floors])
    libs = [floor_rss(_LIBRARIES) for _ in range(3)]
    libs_rss, libs_anon = median([f[0] for f in libs]), median([f[1] for f in libs])
    states = idle_rss(ctx)
    idle, idle_anon = states["released"]
    start, start_anon = states["start"]
    held, held_anon = states["warm"]
    worker = (f"the injection worker (the daemon's python child that loads libguestfs and holds "
              f"the appliance's handle; its QEMU not counted): right after start "
              f"{states['worker-start'][0]:.1f} MiB, RssAnon {states['worker-start'][1]:.1f}; "
              f"appliance ready {states['worker-warm'][0]:.1f} / {states['worker-warm'][1]:.1f}; "
              f"after the release {states['worker-released'][0]:.1f} (0: it exited)")
    cold, cold_anon = daemon_rss(ctx, "mem-idle-no-image", 0, images=False)
    full, _ = daemon_rss(ctx, "mem-full", SERVERS)
    progress(f"memory: floor {floor:.1f} MiB, idle {idle:.1f} / {idle_anon:.1f} MiB (appliance "
             f"released; right after start {start:.1f} / {start_anon:.1f}, warm and held "
             f"{held:.1f} / {held_anon:.1f}), {SERVERS} servers {full:.1f} MiB")
    empty_t, full_t, empty_r, full_r = [], [], [], []
    for i in range(START_RUNS):  # interleaved
        t, r = start_to_ready(ctx.scratch, ctx, f"rec0-{i}", 0)
        empty_t.append(t)
        empty_r.append(r)
        t, r = start_to_ready(ctx.scratch, ctx, f"rec{domains}-{i}", domains)
        full_t.append(t)
        full_r.append(r)
        progress(f"memory: start to ready {empty_t[-1]:.2f} s (0) vs {full_t[-1]:.2f} s "
                 f"({domains}); reconcile {empty_r[-1]:.3f} s vs {full_r[-1]:.3f} s")
    floor_label = "bare python importing agent.app (floor)"
    released = (f"the same daemon right after start, the appliance warm: {start:.1f} MiB, RssAnon "
                f"{start_anon:.1f} (figure memory-idle-warm); the release gave back "
                f"{held - idle:.1f} / {held_anon - idle_anon:.1f} MiB of it held")
    libraries = (f"the libraries alone (asyncio, sqlite3, structlog, pydantic, Starlette, uvicorn "
                 f"without its CLI, libvirt, re2; no agent code): {libs_rss:.1f} MiB, "
                 f"RssAnon {libs_anon:.1f}; "
                 f"importing agent.app: {floor:.1f}, RssAnon {floor_anon:.1f}; "
                 f"the daemon idle with no image (so no appliance warmed at start): {cold:.1f}, "
                 f"RssAnon {cold_anon:.1f}")
    return [
        Figure(key="memory-idle", title="6. Daemon resident memory, idle (no server)",
               agent_s=idle, reference_s=floor, reference_label=floor_label, target_max=64,
               target_on_agent=True, command=command, unit="MiB",
               notes=["VmRSS of the daemon process 2 s after the appliance it warmed at start "
                      "(it has the test image) was released unused "
                      f"(`injection.warm_released`); injection_warm_idle_s = {WARM_IDLE_S:g} here "
                      "only shortens the wait: the state measured is the one the default "
                      "(300 s) reaches. The daemon runs as the systemd unit runs it (the "
                      "compute-agent script, the unit's Environment=: MALLOC_ARENA_MAX=2); the "
                      "floor imports agent.app (Starlette, uvicorn, pydantic, libvirt, structlog; "
                      "pyroute2, libguestfs, httpx, nftables, cryptography and websockets load on "
                      "first use; libguestfs only ever in the injection worker) and does "
                      "nothing", released, libraries, worker]),
        Figure(key="memory-idle-anon", title="6. Daemon anonymous memory (RssAnon), idle",
               agent_s=idle_anon, reference_s=floor_anon, reference_label=floor_label + " (RssAnon)",
               target_max=40, target_on_agent=True, command=command, unit="MiB",
               notes=["RssAnon: the process's own memory, without mapped files and libraries; "
                      "after the warm appliance was released, as above", released, libraries]),
        Figure(key="memory-idle-warm",
               title="6. Daemon resident memory, idle right after start, appliance warm",
               agent_s=start, reference_s=floor, reference_label=floor_label, target_max=None,
               command=command, unit="MiB",
               notes=["VmRSS 2 s after `agent.ready` (the idle figure before the release "
                      "existed), while the appliance warmed at start is launched and held; "
                      f"RssAnon {start_anon:.1f}. Once it is ready (2 s after "
                      f"`injection.warm_ready`): {held:.1f}, RssAnon {held_anon:.1f}. A build "
                      "within injection_warm_idle_s of it finds it warm", worker]),
        Figure(key="memory-1000", title=f"6. Daemon resident memory, {SERVERS} servers in the store",
               agent_s=full, reference_s=floor, reference_label=floor_label, target_max=None,
               command=command, unit="MiB",
               notes=[f"after {READS} GET /servers/detail of all {SERVERS} (seeded rows, no "
                      f"domains: they show UNKNOWN), 2 s after `agent.ready` as the idle daemon right "
                      f"after start (appliance warm): {full - start:.1f} MiB more"]),
        Figure(key="reconcile", title=f"6. Start-up to ready, {domains} servers with running "
                                      f"domains (test driver) (median of {START_RUNS})",
               agent_s=median(full_t), reference_s=median(empty_t),
               reference_label="the same with no server and no domain", target_max=None,
               command=command,
               notes=[f"libvirt's test driver stands in for QEMU (a node file with {domains} "
                      f"running domains carrying the agent's metadata); it answers inside the "
                      f"daemon's process, with no RPC to libvirtd, so this is a lower bound "
                      f"for qemu:///system; the reconcile itself "
                      f"(`reconcile_s` of agent.ready: every server against libvirt) took "
                      f"{median(full_r):.3f} s vs {median(empty_r):.3f} s with none"],
               details={"start_to_ready_s": {"servers": full_t, "none": empty_t},
                        "reconcile_s": {"servers": full_r, "none": empty_r}}),
    ]
