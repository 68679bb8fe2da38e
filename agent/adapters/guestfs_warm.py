"""A warm libguestfs appliance, so that a create's injection does not wait for a launch
(~11-20 s under TCG, 1-3 s on KVM: most of a build).

After a base image has been injected into once, spare overlays of that base are made and
an appliance holding them is launched in the background. A later batch takes the warm
appliance: each request whose disk is a fresh overlay of a base with a spare is done on a
spare instead; the appliance is then shut down (this flushes the spares and releases
them: QEMU's image locks keep a guest off a disk another QEMU holds), and each injected
spare is grown to its disk's virtual size and renamed over the disk. Requests without a
spare go to a launch of their own, as before. The root of the spare the last used base's
next build takes is mounted at warm-up already (premount): that build skips the mount.

Crash safety: a disk is only replaced by a rename of a finished spare, so a crash leaves
either the fresh overlay or the injected one (the create job redoes an unfinished
injection on a disk made again from its base). Spares live in `spares_dir` under the
instances folder: a killed agent's warm appliance is found and killed at start by
kill_stale_appliances, and leftover spares are deleted when this injector is made.

Idle release: a warm appliance no batch took within `idle_s` of becoming ready is shut
down (handle closed, spares deleted, glibc asked to give freed memory back): on an idle
host it holds its QEMU (~800 MiB RSS under TCG), a recovery process and ~4 MiB of its
own process (the injection worker's, which then exits: agent/adapters/injector_worker.py).
The next build then launches its own and the appliance is warmed
again after it, as after any batch; builds closer than `idle_s` keep it warm.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from agent.adapters.guestfs_appliance import kill_stale_appliances, new_handle, watched
from agent.adapters.guestfs_injector import GuestfsInjector, label_of
from agent.adapters.qemu_img import QemuImgDisks
from agent.errors import AgentError, InjectionError
from agent.model.injection import InjectionRequest, InjectionResult

if TYPE_CHECKING:
    import guestfs  # imported where a handle is made: guestfs_appliance.new_handle

log = structlog.get_logger("agent.injection.warm")
WARM_UP_WAIT_S = 120.0
IDLE_S = 300.0  # config: injection_warm_idle_s


@dataclass
class _Warm:
    """A launched appliance and the spares it holds: base -> [(device, spare path)]."""

    g: guestfs.GuestFS
    spares: dict[Path, list[tuple[str, Path]]] = field(default_factory=dict)
    mounted: str | None = None  # the device whose root is mounted at / (premount)

    def take(self, base: Path) -> tuple[str, Path] | None:
        free = self.spares.get(base)
        return free.pop() if free else None


class WarmGuestfsInjector:
    """The DiskInjector port: a GuestfsInjector with a warm appliance in front of it."""

    def __init__(self, cold: GuestfsInjector, spares_dir: Path, spares_per_base: int = 2,
                 disks: QemuImgDisks | None = None, idle_s: float = IDLE_S,
                 on_idle: Callable[[], None] | None = None) -> None:
        self.cold = cold
        self.spares_dir = spares_dir
        self.spares_per_base = spares_per_base
        self.idle_s = idle_s
        self.disks = disks or QemuImgDisks()
        self.warm_hits = 0  # disks done on a spare (for metrics, the bench and tests)
        shutil.rmtree(spares_dir, ignore_errors=True)  # a previous run's spares
        self._lock = threading.Lock()
        self._warm: _Warm | None = None
        self._warming: threading.Thread | None = None
        self._bases: dict[Path, str] = {}  # bases worth spares -> their format
        self._closed = False
        self._idle_timer: threading.Timer | None = None  # releases the idle warm appliance
        # Called (from a thread of ours) when we come to hold nothing: the warm appliance
        # was released for idleness or a warm-up failed. The injection worker exits then.
        self._on_idle = on_idle

    @property
    def launches(self) -> int:
        return self.cold.launches

    def holds_nothing(self) -> bool:
        """No warm appliance and none being launched."""
        with self._lock:
            warming = self._warming is not None and self._warming.is_alive()
            return self._warm is None and not warming

    def inject(self, requests: list[InjectionRequest]) -> list[InjectionResult | InjectionError]:
        warm = self._take_warm()
        results: list[InjectionResult | InjectionError | None] = [None] * len(requests)
        if warm is not None:
            for i, result in self._inject_warm(warm, requests).items():
                results[i] = result
        cold = [i for i, r in enumerate(results) if r is None]
        if cold:
            for i, result in zip(cold, self.cold.inject([requests[i] for i in cold]), strict=True):
                results[i] = result
        with self._lock:
            for req, result in zip(requests, results, strict=True):
                if req.fresh_overlay_of is not None and not isinstance(result, InjectionError):
                    # the last used base last: its next spare is the premounted one
                    self._bases.pop(req.fresh_overlay_of, None)
                    self._bases[req.fresh_overlay_of] = req.base_format
        self._start_warming()
        return [r for r in results if r is not None]

    def close(self) -> None:
        """Stop the warm appliance, and one still launching (it would outlive us)."""
        with self._lock:
            self._closed = True
            warm, self._warm = self._warm, None
            self._cancel_release()
        if warm is not None:
            warm.g.close()
        kill_stale_appliances(self.spares_dir)
        shutil.rmtree(self.spares_dir, ignore_errors=True)

    # -- the warm path ------------------------------------------------------------------
    def _take_warm(self) -> _Warm | None:
        """The warm appliance, waiting for one being launched (it is ready sooner than a
        launch of our own, and two launches at once slow each other down)."""
        warming = self._warming
        if warming is not None:
            warming.join(WARM_UP_WAIT_S)  # a launch that hangs: go cold (and leave it be)
        with self._lock:
            warm, self._warm = self._warm, None
            self._cancel_release()
        return warm

    def _inject_warm(self, warm: _Warm, requests: list[InjectionRequest]
                     ) -> dict[int, InjectionResult | InjectionError]:
        taken: dict[int, tuple[str, Path]] = {}
        for i, req in enumerate(requests):
            spare = warm.take(req.fresh_overlay_of) if req.fresh_overlay_of else None
            if spare is not None:
                taken[i] = spare
        try:
            if not taken:
                return {}
            done = self.cold.inject_on(warm.g, [d for d, _ in taken.values()],
                                       [requests[i] for i in taken], mounted=warm.mounted)
            # Autosync is off (guestfs_appliance.new_handle): the unmount flushes what is
            # still mounted, QEMU writes its qcow2 metadata as it exits. A failure here
            # fails them all.
            warm.g.umount_all()
            warm.g.shutdown()
        except RuntimeError as e:
            log.warning("injection.warm_failed", error=str(e).splitlines()[0][:200])
            for _, spare in taken.values():
                spare.unlink(missing_ok=True)
            return {}  # their disks were not touched: the cold path does them
        finally:
            warm.g.close()
            self._drop_unused(warm)
        results: dict[int, InjectionResult | InjectionError] = {}
        for (i, (_, spare)), result in zip(taken.items(), done, strict=True):
            if not isinstance(result, InjectionError):
                result = self._put_in_place(spare, requests[i], result)
            spare.unlink(missing_ok=True)
            results[i] = result
        hits = sum(not isinstance(r, InjectionError) for r in results.values())
        self.warm_hits += hits
        log.info("injection.warm_used", disks=hits, failed=len(results) - hits)
        return results

    def _put_in_place(self, spare: Path, req: InjectionRequest,
                      result: InjectionResult) -> InjectionResult | InjectionError:
        try:
            self.disks.grow(spare, self.disks.virtual_size(req.disk))
            os.replace(spare, req.disk)  # same filesystem: atomic
        except (AgentError, OSError) as e:
            return InjectionError(f"injected disk could not be put in place: {e}")
        return result

    @staticmethod
    def _drop_unused(warm: _Warm) -> None:
        """Spares not taken are deleted, not reused: a closed appliance may have written
        to any drive it held, so only a spare made afresh is known to equal its base."""
        for free in warm.spares.values():
            for _, spare in free:
                spare.unlink(missing_ok=True)
        warm.spares.clear()

    # -- warming up ---------------------------------------------------------------------
    def warm_up_for(self, bases: dict[Path, str], prepare: Callable[[], None] | None = None) -> None:
        """Launch the warm appliance now, for these bases (base path -> format): the
        daemon calls it at start for the images present, so that the first build after a
        start does not pay a launch either. `prepare` runs first in the warm-up's thread
        (it makes the base files); a build arriving meanwhile waits for this launch
        rather than starting a second one."""
        with self._lock:
            self._bases.update(bases)
        self._start_warming(prepare)

    def _start_warming(self, prepare: Callable[[], None] | None = None) -> None:
        with self._lock:
            if self._closed or self._warm is not None or not self._bases or self.spares_per_base < 1:
                return
            if self._warming is not None and self._warming.is_alive():
                return
            bases = dict(self._bases)
            self._warming = threading.Thread(target=self._warm_up, args=(bases, prepare),
                                             name="guestfs-warm-up", daemon=True)
            self._warming.start()

    def _warm_up(self, bases: dict[Path, str], prepare: Callable[[], None] | None = None) -> None:
        made: list[tuple[Path, Path]] = []
        g: guestfs.GuestFS | None = None
        try:
            if prepare is not None:
                prepare()
            self.spares_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
            for base, fmt in bases.items():
                for _ in range(self.spares_per_base):
                    spare = self.spares_dir / f"{uuid.uuid4().hex}.qcow2"
                    self.disks.create_overlay(base, fmt, spare, 0)
                    made.append((base, spare))
            g = watched(new_handle(self.cold.virt_type), [str(spare) for _, spare in made],
                        self.cold.limits)  # every call bounded, as the cold path's
            for i, (_, spare) in enumerate(made):
                g.add_drive_opts(str(spare), format="qcow2", readonly=False, label=label_of(i))
            g.launch()
            devices = g.list_devices()
            # Where each base's root is, learnt now on its first spare rather than by the
            # first build's injection (requests key layouts by their base's path).
            first: dict[str, str] = {}
            for (base, _), device in zip(made, devices, strict=True):
                first.setdefault(str(base), device)
            mounted: str | None = None
            try:
                self.cold.learn_root_places(g, first)
                mounted = self._premount(g, made, devices)
            except RuntimeError as e:  # the builds will probe themselves: no harm
                log.warning("injection.root_probe_failed", error=str(e).splitlines()[0][:200])
        except (RuntimeError, AgentError, OSError) as e:
            # No retry loop: the next successful injection tries again.
            log.warning("injection.warm_up_failed", error=str(e).splitlines()[0][:200])
            if g is not None:
                g.close()
            for _, spare in made:
                spare.unlink(missing_ok=True)
            with self._lock:
                self._bases.clear()
                if self._warming is threading.current_thread():
                    self._warming = None  # so that holds_nothing() is true from now on
            self._idle()
            return
        warm = _Warm(g, mounted=mounted)
        for (base, spare), device in zip(made, devices, strict=True):
            warm.spares.setdefault(base, []).append((device, spare))
        with self._lock:
            if not self._closed:
                self._warm, warm = warm, None
                self._arm_release(self._warm)
        if warm is not None:  # closed meanwhile
            g.close()
            self._drop_unused(warm)
        else:
            log.info("injection.warm_ready", spares=len(made))

    def _premount(self, g: guestfs.GuestFS, made: list[tuple[Path, Path]],
                  devices: list[str]) -> str | None:
        """The root of the spare the next build of the last used base takes first (its
        last: _Warm.take pops) mounted now, so that build does not wait for the mount."""
        (base, _), device = made[-1], devices[-1]
        return device if self.cold.premount(g, device, str(base)) else None

    # -- idle release -------------------------------------------------------------------
    def _arm_release(self, warm: _Warm) -> None:
        """Under the lock: release `warm` if no batch takes it within idle_s. A timer
        thread, so the close (a second or so) never runs on the daemon's event loop."""
        self._cancel_release()
        self._idle_timer = threading.Timer(self.idle_s, self._release_idle, args=(warm,))
        self._idle_timer.name = "guestfs-warm-idle"
        self._idle_timer.daemon = True
        self._idle_timer.start()

    def _cancel_release(self) -> None:
        """Under the lock: the warm appliance was taken (or we close): no release."""
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _release_idle(self, warm: _Warm) -> None:
        with self._lock:
            if self._warm is not warm:  # a batch took it (or close did) meanwhile
                return
            self._warm = None
            self._idle_timer = None
        warm.g.close()
        self._drop_unused(warm)
        return_freed_memory()
        log.info("injection.warm_released", idle_s=self.idle_s)
        self._idle()

    def _idle(self) -> None:
        if self._on_idle is not None:
            self._on_idle()


def return_freed_memory() -> None:
    """Ask glibc to give freed heap back to the system: libguestfs keeps QEMU's parsed
    help, devices and QMP schema (~2.6 MiB) in an open handle, and once freed that memory
    stays in malloc's arenas (RssAnon) unless trimmed. Nothing where libc is not glibc."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
