"""Figure 8: a distribution image to a login prompt, against the tools a single-host user
would pick for the same job.

Agent: POST /servers (the debian-12-test image, flavor 2, a generated root password and
one personality file) until `login:` shows on the guest's serial console (its log).
Reference, on the same image and flavor: a qcow2 overlay of a copy of the image,
`virt-customize --root-password ... --upload ...` on it, `virt-install --import` (the
same vCPUs and RAM, no NIC, serial console to a file, TCG when the agent uses it) until
`login:` shows in that file. One run each (each is a systemd boot under TCG).
"""

from __future__ import annotations

import base64
import contextlib
import secrets
import uuid
from pathlib import Path

from agent.adapters.image_catalog import load_manifest
from agent.model.host import VirtType
from bench.context import IMAGES_DIR, Context, run
from bench.daemon import BenchDaemon, create_server, delete_servers, instance_dir
from bench.injection import text_file
from bench.provisioning import wait_warm
from bench.report import Figure, progress
from bench.timing import Stopwatch, poll

MANIFEST = IMAGES_DIR / "debian-12-test" / "manifest.json"
FLAVOR = ("2", 1, 512)  # id, vCPUs, MiB: the same for both
BOOT_TIMEOUT_S = 900
LOGIN = b"login:"


def _seen(path: Path) -> bool:
    try:
        return LOGIN in path.read_bytes()
    except OSError:
        return False


def _to_login(api, daemon: BenchDaemon, image_id: str, name: str) -> float:
    contents = base64.b64encode(text_file(1, 1024)).decode()
    personality = [{"path": "/etc/motd", "contents": contents}]
    with Stopwatch() as sw:
        server_id = create_server(api, name, image_id, FLAVOR[0], personality)
        log = instance_dir(daemon, server_id) / "console.log"
        poll(lambda: _seen(log), BOOT_TIMEOUT_S, interval=0.2, what="agent guest login:")
    with contextlib.suppress(Exception):
        delete_servers(api, [server_id])
    return sw.elapsed


def agent_run(ctx: Context, image_id: str) -> tuple[float, float]:
    """(first build of the image since the daemon started: the injection appliance is
    launched on the build's path; the next one, on the warm appliance the daemon keeps
    between builds)."""
    with BenchDaemon(ctx.scratch, "debian") as daemon, daemon.client() as api:
        cold = _to_login(api, daemon, image_id, "debian-cold")
        wait_warm(daemon, 1)
        warm = _to_login(api, daemon, image_id, "debian-warm")
    return cold, warm


def reference_run(ctx: Context, disk_file: Path) -> float:
    name = f"bench-virtinst-{uuid.uuid4().hex[:12]}"
    d = ctx.scratch.subdir(name)
    base = d / "base.qcow2"
    run(["cp", "--sparse=always", str(disk_file), str(base)])
    base.chmod(0o644)
    disk, log, motd = d / "disk.qcow2", d / "console.log", d / "motd"
    motd.write_bytes(text_file(1, 1024))
    virt = "qemu" if ctx.virt_type is VirtType.QEMU else "kvm"
    try:
        with ctx.scratch.private_dir() as private, Stopwatch() as sw:
            password = private / "pw"
            password.write_text(secrets.token_urlsafe(12))
            run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base),
                 str(disk)])
            run(["virt-customize", "-q", "-a", str(disk), "--root-password",
                 f"file:{password}", "--upload", f"{motd}:/etc/motd"], env=ctx.guestfs_env,
                timeout=BOOT_TIMEOUT_S)
            run(["virt-install", "--connect", "qemu:///system", "--import", "--name", name,
                 "--vcpus", str(FLAVOR[1]), "--memory", str(FLAVOR[2]), "--virt-type", virt,
                 "--disk", f"path={disk},format=qcow2,bus=virtio",
                 "--osinfo", "debian11",  # bookworm's osinfo-db has no debian12 yet
                 "--network", "none", "--graphics", "none", "--noautoconsole",
                 "--serial", f"file,path={log}"], timeout=BOOT_TIMEOUT_S)
            poll(lambda: _seen(log), BOOT_TIMEOUT_S, interval=0.2, what="virt-install login:")
        return sw.elapsed
    finally:
        ctx.scratch.remove_domains()


def debian_boot(ctx: Context, command: str) -> list[Figure]:
    if not MANIFEST.exists():
        raise RuntimeError("debian-12-test is not built (make images)")
    image = load_manifest(MANIFEST)
    progress("figure 8: agent, POST /servers to login: on debian-12-test, cold then warm")
    cold_s, warm_s = agent_run(ctx, str(image.uuid))
    progress(f"figure 8: agent {cold_s:.1f} s cold, {warm_s:.1f} s warm; virt-customize + "
             "virt-install --import")
    reference_s = reference_run(ctx, image.disk_file)
    progress(f"figure 8: reference {reference_s:.1f} s")
    title = ("9. POST /servers to login: on the Debian 12 image (systemd, extlinux), a file "
             "and a root password, vs virt-customize + virt-install --import")
    common = {"reference_s": reference_s, "target_max": 0.8, "strict": True,
              "command": command,
              "reference_label": "virt-customize --root-password --upload, "
                                 "virt-install --import"}
    notes = ["one run each; a systemd boot under TCG (about 30 s here) is in both",
             f"flavor {FLAVOR[0]}: {FLAVOR[1]} vCPU, {FLAVOR[2]} MiB, no NIC"]
    return [
        Figure(key="debian_login", title=title + ", warm appliance", agent_s=warm_s,
               notes=[*notes, "the daemon's second build of the image: injected on its warm "
                              "appliance (as every build after an image's first)"], **common),
        Figure(key="debian_login_cold", title=title + ", first build after start",
               agent_s=cold_s,
               notes=[*notes, "the daemon's first build of the image since it started: the "
                              "libguestfs appliance is launched on the build's path"],
               **common)]
