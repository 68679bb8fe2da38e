"""Figures 2 and 3 (injector level): personality files and a root password hash into
fresh overlays of the test image with the agent's GuestfsInjector, against a bare
appliance launch (`guestfish run`, the floor) and `virt-customize` (the peer), and one
batch of 8 disks in one appliance against 8 single injections."""

from __future__ import annotations

import contextlib
import secrets
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import guestfs

import agent.adapters.guestfs_injector as injector_module
from agent.adapters.guestfs_injector import GuestfsInjector
from agent.adapters.guestfs_warm import WARM_UP_WAIT_S, WarmGuestfsInjector
from agent.core.sha512_crypt import sha512_crypt
from agent.errors import InjectionError
from agent.model.injection import InjectedFile, InjectionRequest, InjectionResult
from bench.context import Context, run
from bench.report import Figure, progress
from bench.timing import Stopwatch, median, summary

FILE_COUNT = 5
FILE_SIZE = 10 * 1024  # the default maxPersonalitySize, decoded bytes
CLI_TIMEOUT_S = 600


def text_file(index: int, size: int = FILE_SIZE) -> bytes:
    """`size` bytes of plain text (what the API accepts: UTF-8, no NUL, not an archive)."""
    line = f"compute-agent bench file {index}: the quick brown fox jumps over the lazy dog\n"
    return (line * (size // len(line) + 1)).encode()[:size]


def payload(tag: str) -> tuple[InjectedFile, ...]:
    return tuple(InjectedFile(path=f"/etc/bench-{tag}-{i}.txt", contents=text_file(i))
                 for i in range(1, FILE_COUNT + 1))


# -- where the time goes inside GuestfsInjector.inject ------------------------------------
class Calls(dict[str, list[float]]):
    """libguestfs method name -> [total seconds, number of calls]."""

    def seconds(self, name: str) -> float:
        return self.get(name, [0.0, 0])[0]

    def total(self) -> float:
        return sum(v[0] for v in self.values())

    def slowest(self, n: int = 8) -> dict[str, str]:
        top = sorted(self.items(), key=lambda kv: -kv[1][0])[:n]
        return {name: f"{secs:.2f} s in {int(count)} call(s)" for name, (secs, count) in top}


class _TimedHandle:
    """Wraps a guestfs handle and adds each method call's duration to `calls`."""

    def __init__(self, g: guestfs.GuestFS, calls: Calls) -> None:
        self._g = g
        self._calls = calls

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._g, name)
        if not callable(attr):
            return attr

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            try:
                return attr(*args, **kwargs)
            finally:
                entry = self._calls.setdefault(name, [0.0, 0])
                entry[0] += time.monotonic() - started
                entry[1] += 1
        return timed


@contextlib.contextmanager
def profiled_handles(calls: Calls) -> Iterator[None]:
    """Make the injector's handles timed ones (a few microseconds per call)."""
    original: Callable[..., guestfs.GuestFS] = injector_module.new_handle
    injector_module.new_handle = lambda virt_type: _TimedHandle(original(virt_type), calls)
    try:
        yield
    finally:
        injector_module.new_handle = original


def phases(calls: Calls, total: float) -> dict[str, float]:
    """Group the calls of one inject(): set-up, launch, work in the appliance, shutdown."""
    setup = calls.seconds("add_drive_opts")
    launch = calls.seconds("launch")
    stop = calls.seconds("shutdown") + calls.seconds("close")
    work = calls.total() - setup - launch - stop
    return {"add_drives": setup, "launch": launch, "work_in_appliance": work,
            "shutdown_close": stop, "python_outside_calls": total - calls.total()}


def agent_inject(ctx: Context, requests: list[InjectionRequest], calls: Calls | None = None,
                 injector: GuestfsInjector | None = None,
                 ) -> tuple[float, GuestfsInjector, list[InjectionResult]]:
    injector = injector or GuestfsInjector(ctx.virt_type)
    with profiled_handles(calls if calls is not None else Calls()), Stopwatch() as sw:
        results = injector.inject(requests)
    failed = [r for r in results if isinstance(r, InjectionError)]
    if failed:
        raise RuntimeError(f"agent injection failed: {failed[0]}")
    return sw.elapsed, injector, [r for r in results if isinstance(r, InjectionResult)]


# -- figure 2 ---------------------------------------------------------------------------
def injection(ctx: Context, runs: int, command: str) -> list[Figure]:
    work = ctx.scratch.subdir("injection")
    files = payload("f")
    password = secrets.token_urlsafe(12)
    password_hash = sha512_crypt(password)
    for f in files:  # what virt-customize uploads: the same bytes
        (work / Path(f.path).name).write_bytes(f.contents)
    agent_t: list[float] = []
    floor_t: list[float] = []
    peer_t: list[float] = []
    breakdowns: list[dict[str, float]] = []
    calls_per_run: list[Calls] = []
    with ctx.scratch.private_dir() as private:
        password_file = private / "root-password"
        password_file.touch(mode=0o600)
        password_file.write_text(password + "\n")

        # One injector for every run, as the daemon keeps one: from the second run on it
        # knows where the base's root filesystem is.
        injector = GuestfsInjector(ctx.virt_type)

        def agent() -> None:
            disk = ctx.new_overlay(work / "agent.qcow2")
            calls = Calls()
            elapsed, _, _ = agent_inject(ctx, [InjectionRequest(
                disk=disk, files=files, root_password_hash=password_hash,
                layout_key=str(ctx.base))], calls, injector)
            agent_t.append(elapsed)
            breakdowns.append(phases(calls, elapsed))
            calls_per_run.append(calls)
            disk.unlink()

        def floor() -> None:
            disk = ctx.new_overlay(work / "floor.qcow2")
            with Stopwatch() as sw:
                run(["guestfish", "--rw", "--format=qcow2", "-a", str(disk), "run"],
                    env=ctx.guestfs_env, timeout=CLI_TIMEOUT_S)
            floor_t.append(sw.elapsed)
            disk.unlink()

        def peer() -> None:
            disk = ctx.new_overlay(work / "peer.qcow2")
            with Stopwatch() as sw:
                run(peer_command(disk, work, files, password_file), env=ctx.guestfs_env,
                    timeout=CLI_TIMEOUT_S)
            peer_t.append(sw.elapsed)
            disk.unlink()

        steps = [agent, floor, peer]
        for i in range(runs):
            # Rotate the order so that drift in the machine's load does not favour one.
            for step in steps[i % 3:] + steps[:i % 3]:
                step()
            progress(f"injection {i + 1}/{runs}: agent {agent_t[-1]:.1f} s, floor "
                     f"{floor_t[-1]:.1f} s, peer {peer_t[-1]:.1f} s")
        warm_t = warm_injections(ctx, work, runs, files, password_hash)

    ctx.shared["injection_single_s"] = median(agent_t)
    breakdown = {k: round(statistics.median(b[k] for b in breakdowns), 3) for k in breakdowns[0]}
    inside = ", ".join(f"{k.replace('_', ' ')} {v:.2f} s" for k, v in breakdown.items())
    details = {"agent": summary(agent_t), "floor": summary(floor_t), "peer": summary(peer_t),
               "agent_breakdown_s": breakdown,
               "agent_slowest_calls_last_run": calls_per_run[-1].slowest(),
               "payload": f"{FILE_COUNT} files x {FILE_SIZE} bytes + root password hash"}
    where = f"inside inject() (medians): {inside}"
    floor_cmd = "guestfish --rw --format=qcow2 -a DISK run"
    peer_cmd = ("virt-customize --no-network --format qcow2 -a DISK --upload F:/P --chmod 0440:/P "
                "(x5) --root-password file:PWFILE --password-crypto sha512")
    title = f"2. Injection, {FILE_COUNT} x 10 KiB + password, one disk (median of {runs})"
    return [
        Figure(key="injection-floor", title=f"{title} vs floor", agent_s=median(agent_t),
               reference_s=median(floor_t), reference_label="bare `guestfish run`",
               target_max=1.1, command=command, details=details,
               notes=[f"floor: `{floor_cmd}` (appliance launch and shutdown, no work); "
                      "agent: `GuestfsInjector.inject()` in-process; fresh overlay each run, "
                      "overlay creation not timed", where]),
        Figure(key="injection-warm", title=f"{title}, on the warm appliance, vs floor",
               agent_s=median(warm_t), reference_s=median(floor_t),
               reference_label="bare `guestfish run`", target_max=1.1, command=command,
               details={"warm": summary(warm_t), "floor": summary(floor_t)},
               notes=["the daemon's path: `WarmGuestfsInjector.inject()` on a fresh overlay "
                      "while its warm appliance (launched after the previous injection, not "
                      "timed) holds a spare of the same base: the work, the appliance's "
                      "shutdown and the spare renamed over the disk; the launch is paid in "
                      "the background between builds"]),
        Figure(key="injection-peer", title=f"{title} vs peer", agent_s=median(agent_t),
               reference_s=median(peer_t), reference_label="`virt-customize`",
               target_max=1.0, strict=True, command=command, details=details,
               notes=[f"peer: `{peer_cmd}`; it inspects the guest OS first, which the agent "
                      "replaces with a cheap probe for /etc/passwd"]),
    ]


def warm_injections(ctx: Context, work: Path, runs: int, files: tuple[InjectedFile, ...],
                    password_hash: str) -> list[float]:
    """Seconds of each injection done on a warm spare, the appliance ready beforehand."""
    warm = WarmGuestfsInjector(GuestfsInjector(ctx.virt_type), work / "spares", spares_per_base=1)
    times: list[float] = []
    try:
        for i in range(runs + 1):  # run 0 launches cold and makes the base warm
            disk = ctx.new_overlay(work / f"warm-{i}.qcow2")
            if warm._warming is not None:
                warm._warming.join(WARM_UP_WAIT_S)  # not timed: the launch between builds
            with Stopwatch() as sw:
                [result] = warm.inject([InjectionRequest(
                    disk=disk, files=files, root_password_hash=password_hash,
                    layout_key=str(ctx.base), fresh_overlay_of=ctx.base,
                    base_format=ctx.image.disk_format)])
            if isinstance(result, InjectionError):
                raise RuntimeError(f"warm injection failed: {result}")
            if i:
                times.append(sw.elapsed)
                progress(f"injection on the warm appliance {i}/{runs}: {sw.elapsed:.1f} s")
            disk.unlink()
        if warm.warm_hits != runs:
            raise RuntimeError(f"only {warm.warm_hits} of {runs} injections found a warm spare")
    finally:
        warm.close()
    return times


def peer_command(disk: Path, local: Path, files: tuple[InjectedFile, ...],
                 password_file: Path) -> list[str]:
    """virt-customize doing what the agent does: upload, mode 0440, SHA-512 root password.
    The password comes from a 0600 file, never argv."""
    cmd = ["virt-customize", "--no-network", "--format", "qcow2", "-a", str(disk)]
    for f in files:
        cmd += ["--upload", f"{local / Path(f.path).name}:{f.path}", "--chmod", f"0440:{f.path}"]
    return [*cmd, "--root-password", f"file:{password_file}", "--password-crypto", "sha512"]


# -- figure 3, injector level -------------------------------------------------------------
def batch_injection(ctx: Context, size: int, runs: int, single_runs: int,
                    command: str) -> Figure:
    work = ctx.scratch.subdir("batch-injection")
    password_hash = sha512_crypt(secrets.token_urlsafe(12))
    single_note = "single-disk time from figure 2 of this run"
    single = ctx.shared.get("injection_single_s")
    if single is None:  # run alone: measure the single-disk time here
        singles = []
        for i in range(single_runs):
            disk = ctx.new_overlay(work / "single.qcow2")
            elapsed, _, _ = agent_inject(ctx, [InjectionRequest(
                disk=disk, files=payload("s"), root_password_hash=password_hash)])
            singles.append(elapsed)
            disk.unlink()
            progress(f"batch: single disk {i + 1}/{single_runs}: {elapsed:.1f} s")
        single = median(singles)
        single_note = f"single-disk time measured here, median of {single_runs}"
    batch_t: list[float] = []
    launches: list[int] = []
    per_disk_work: list[float] = []
    calls = Calls()
    for r in range(runs):
        disks = [ctx.new_overlay(work / f"disk{i}.qcow2") for i in range(size)]
        requests = [InjectionRequest(disk=d, files=payload(f"b{i}"), root_password_hash=password_hash)
                    for i, d in enumerate(disks)]
        calls.clear()
        elapsed, injector, results = agent_inject(ctx, requests, calls)
        batch_t.append(elapsed)
        launches.append(injector.launches)
        per_disk_work += [res.seconds for res in results]
        for d in disks:
            d.unlink()
        progress(f"batch: {size} disks in one inject() {r + 1}/{runs}: {elapsed:.1f} s, "
                 f"{injector.launches} appliance launch(es)")
    breakdown = phases(calls, batch_t[-1])
    work_calls = {k: v for k, v in calls.slowest(5).items()
                  if k not in ("launch", "shutdown", "close")}
    return Figure(
        key="batch-injection",
        title=f"3a. {size} disks in one `inject()` (median of {runs})",
        agent_s=median(batch_t), reference_s=size * single,
        reference_label=f"{size} x one disk", target_max=0.5, command=command,
        notes=[f"{single_note}; appliance launches per batch: {max(launches)} (vs {size}); "
               f"per-disk work inside the appliance median {median(per_disk_work):.2f} s; last "
               "batch: " + ", ".join(f"{k.replace('_', ' ')} {v:.2f} s" for k, v in breakdown.items())
               + "; costliest work calls: " + ", ".join(f"{k} {v}" for k, v in work_calls.items()),
               "target: issue 8's 0.5 for figure 3, applied to the injector alone"],
        details={"batch": summary(batch_t), "single_s": round(single, 3),
                 "launches": launches, "per_disk_work": summary(per_disk_work),
                 "last_batch_breakdown_s": {k: round(v, 3) for k, v in breakdown.items()},
                 "last_batch_slowest_calls": calls.slowest(12)})
