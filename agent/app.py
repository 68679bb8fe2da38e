"""Composition root: the one place that picks concrete adapters and wires them in, and
the daemon's life: listeners, job runner, signals, sd_notify."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import uvicorn

from agent.adapters.dnsmasq import DnsmasqDhcp
from agent.adapters.guestfs_appliance import kill_stale_appliances
from agent.adapters.guestfs_injector import GuestfsInjector
from agent.adapters.guestfs_warm import WarmGuestfsInjector
from agent.adapters.host_checks import host_checks, start_checks, virt_decision
from agent.adapters.http_guard import guarded_protocol
from agent.adapters.image_catalog import WritableImageCatalog
from agent.adapters.libvirt_eventloop import install_event_loop
from agent.adapters.libvirt_events import LibvirtEventSource
from agent.adapters.libvirt_hypervisor import LibvirtHypervisor
from agent.adapters.listeners import connections_per_listener, tcp_listener, unix_listener
from agent.adapters.netlink import NetlinkPlumber
from agent.adapters.nft_guard import NftPortGuard
from agent.adapters.qemu_img import QemuImgDisks, QemuImgInspector
from agent.adapters.sqlite_store import SqliteStore, read_server_ids
from agent.adapters.ssh_keys import CryptographySshKeys
from agent.adapters.state_lock import StateDirLock
from agent.adapters.systemd_notify import sd_notify, watchdog_interval
from agent.adapters.webhook_http import HttpxWebhookSender
from agent.api.app import ApiDeps, create_api
from agent.api.auth import TokenInfo
from agent.config import Config, HttpLimits, load_config, webhook_key
from agent.core.console import ConsoleFiles
from agent.core.doctor import DoctorReport, run_checks
from agent.core.event_feed import EventFeed, EventNotifier, StreamSlots
from agent.core.flavors import FlavorCatalog
from agent.core.image_import import import_image as import_into
from agent.core.injection import InjectionBatcher
from agent.core.jobs import JobRunner
from agent.core.keypairs import KeypairService
from agent.core.metrics import Metrics
from agent.core.monitor import PowerMonitor
from agent.core.netplumbing import NetworkPlumbing
from agent.core.networks import NetworkCatalog, PortService
from agent.core.recovery import SweepReport, quarantine_check, sweep
from agent.core.servers import ServerService
from agent.core.webhooks import Backoff, WebhookDispatcher, WebhookTarget
from agent.core.workflows.actions import action_workflows
from agent.core.workflows.base import CheckpointHook, WorkflowDeps
from agent.core.workflows.create import CreateWorkflow, base_path
from agent.core.workflows.delete import DeleteWorkflow
from agent.core.workflows.guest_ops import ActionTimings
from agent.errors import AgentError, ConfigError, HostUnfit
from agent.log import configure_logging
from agent.model.host import CheckResult
from agent.model.image import Image
from agent.model.job import Job, JobKind
from agent.model.requests import RequestContext

log = structlog.get_logger("agent.app")

# Fault injection for the crash-safety tests: "create:domain" kills the daemon (as kill -9
# would) right after that checkpoint is committed. Never set in production.
CRASH_AT_ENV = "COMPUTE_AGENT_TEST_CRASH_AT"
# "create:injected" kills it every time that step's work is done, before its checkpoint:
# a step that always crashes the daemon (the poison-job guard's test). Never in production.
CRASH_IN_ENV = "COMPUTE_AGENT_TEST_CRASH_IN"
STOP_TIMEOUT_S = 20.0
STARTUP_RECONCILE_TIMEOUT_S = 30.0
SPARES_DIR = "_spares"  # the warm appliance's spare overlays, under the instances folder


def make_config(config_file: Path | None, overrides: dict[str, Any]) -> Config:
    config = load_config(config_file, overrides)
    configure_logging(config.log_level, config.log_format)
    return config


def doctor(config: Config, *, guestfs: bool = True) -> DoctorReport:
    return run_checks([*host_checks(config, guestfs=guestfs),
                       ("quarantine", lambda: _quarantine_check(config))])


def _quarantine_check(config: Config) -> CheckResult:
    """Domains and instance dirs of ours that the store does not know (see recovery)."""
    hypervisor = LibvirtHypervisor(config.libvirt_uri)
    try:
        return quarantine_check(read_server_ids(config.database_path), hypervisor,
                                config.instances_dir)
    except AgentError as e:  # libvirt down (its own line fails) or the store unreadable
        return CheckResult(name="quarantine", ok=False, required=False,
                           detail=f"cannot tell: {e}")
    finally:
        hypervisor.close()


def _report_quarantine(agent: Agent, swept: SweepReport) -> None:
    """Quarantined taps stay plugged and are never given to a new port; the gauge counts."""
    if agent.network is not None:
        agent.network.quarantined_taps = swept.quarantined_taps
    for kind in ("domain", "instance_dir"):
        agent.metrics.quarantined.labels(kind).set(sum(q.kind == kind for q in swept.quarantined))


def refuse_unfit_host(config: Config) -> None:
    """HostUnfit, naming every reason, when the host would fail every build: better a
    daemon that does not start than one whose every server ends in ERROR."""
    failed = [r for r in run_checks(start_checks(config)).results if not r.ok]
    if failed:
        raise HostUnfit("this host cannot build servers: "
                        + "; ".join(f"{r.name}: {r.detail} (fix: {r.fix})" for r in failed))


def import_image(config: Config, source: Path, name: str, properties: dict[str, str],
                 min_ram: int = 0, disk_format: str | None = None) -> Image:
    """`compute-agent image import`: into the first image folder, which the daemon's
    catalog reads on every request (so no restart is needed)."""
    catalog = WritableImageCatalog(*config.image_dirs)
    return import_into(catalog, QemuImgInspector(), source, name, properties, min_ram,
                       disk_format)


def _crash_hook(env: str = CRASH_AT_ENV) -> CheckpointHook:
    target = os.environ.get(env)

    def hook(job: Job, step: str) -> None:
        if target and f"{job.kind.value}:{step}" == target:
            os._exit(137)

    return hook


@dataclass
class Agent:
    """Everything the daemon is made of, wired."""

    config: Config
    store: SqliteStore
    hypervisor: LibvirtHypervisor
    runner: JobRunner
    service: ServerService
    images: WritableImageCatalog
    flavors: FlavorCatalog
    monitor: PowerMonitor
    # Shared by every listener and changed in place on SIGHUP, so a reload needs no restart.
    tokens: dict[str, TokenInfo] = field(default_factory=dict)
    ports: PortService | None = None
    network: NetworkPlumbing | None = None
    # Woken by the store after each commit that appended events: the feed and webhooks wait on it.
    notifier: EventNotifier = field(default_factory=EventNotifier)
    webhooks: WebhookDispatcher | None = None
    metrics: Metrics = field(default_factory=Metrics)
    disk_injector: WarmGuestfsInjector | None = None
    keypairs: KeypairService | None = None
    # Event streams and long polls open at once, counted across every listener.
    feed_slots: StreamSlots = field(default_factory=lambda: StreamSlots(64, 4))

    def load_tokens(self, config: Config) -> None:
        fresh = {t.token.get_secret_value(): TokenInfo(project_id=t.project_id, user_id=t.user_id,
                                                       is_admin=t.admin) for t in config.tokens}
        self.tokens.clear()
        self.tokens.update(fresh)

    def api(self, default_context: RequestContext | None) -> Any:
        if not self.tokens:
            self.load_tokens(self.config)
        return create_api(ApiDeps(servers=self.service, flavors=self.flavors, images=self.images,
                                  limits=self.config.limits, store=self.store,
                                  host_id=self.config.host, tokens=self.tokens,
                                  default_context=default_context, ports=self.ports,
                                  body_timeout_s=self.config.http.body_timeout_s,
                                  events=EventFeed(self.store, self.notifier,
                                                   slots=self.feed_slots),
                                  metrics=self.metrics, keypairs=self.keypairs,
                                  consoles=ConsoleFiles(self.config.instances_dir)))

    def reload(self, reread: Callable[[], Config]) -> None:
        """SIGHUP: what can change live (log level and format, tokens, webhooks). A bad file keeps
        the running configuration and says why."""
        try:
            config = reread()
        except ConfigError as e:
            log.error("config.reload_failed", error=str(e))
            return
        configure_logging(config.log_level, config.log_format)
        self.load_tokens(config)
        self.notifier.poke()  # streams and long polls re-check their tokens now
        self.configure_webhooks(config)
        log.info("config.reloaded", tokens=len(self.tokens), log_level=config.log_level)

    def configure_webhooks(self, config: Config) -> None:
        if self.webhooks is None:
            return
        self.webhooks.configure(
            [WebhookTarget(w.url, w.timeout_s, {k: v.get_secret_value() for k, v in w.headers.items()},
                           secret=webhook_key(w.secret.get_secret_value()) if w.secret else None)
             for w in config.webhooks],
            Backoff(config.webhook_backoff_initial_s, config.webhook_backoff_max_s))

    def close(self) -> None:
        if self.disk_injector is not None:
            self.disk_injector.close()  # its warm appliance would outlive the daemon
        self.store.close()
        self.hypervisor.close()


def build_agent(config: Config) -> Agent:
    decision = virt_decision(config)
    log.info("virt_type.decided", virt_type=decision.virt_type.value, reason=decision.reason)
    for d in (config.state_dir, config.instances_dir, config.base_images_dir):
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o755)  # QEMU runs unprivileged and must reach guest disks below
    refuse_unfit_host(config)  # after mkdir: the folders it made are checked too
    store = SqliteStore(config.database_path)
    hypervisor = LibvirtHypervisor(config.libvirt_uri)
    images = WritableImageCatalog(*config.image_dirs, boot_cache=config.base_images_dir)
    flavors = FlavorCatalog(config.flavors)
    catalog = NetworkCatalog(config.networks)
    guard = NftPortGuard() if any(n.port_security for n in config.networks) else None
    network = NetworkPlumbing(store, catalog, NetlinkPlumber(), DnsmasqDhcp(
        config.state_dir, config.dnsmasq_binary, config.dhcp_lease_time), guard=guard)
    deps = WorkflowDeps(store=store, hypervisor=hypervisor, disks=QemuImgDisks(), images=images,
                        flavors=flavors, instances_dir=config.instances_dir,
                        base_dir=config.base_images_dir, virt_type=decision.virt_type,
                        on_checkpoint=_crash_hook(),
                        before_checkpoint=_crash_hook(CRASH_IN_ENV), network=network)
    metrics = Metrics()
    metrics.watch_servers(store)
    disk_injector = WarmGuestfsInjector(GuestfsInjector(decision.virt_type),
                                        config.instances_dir / SPARES_DIR,
                                        spares_per_base=config.injection_warm_spares)
    injector = InjectionBatcher(disk_injector,
                                window_s=config.injection_batch_window_s,
                                max_batch=config.injection_max_batch, metrics=metrics)
    timings = ActionTimings(clean_shutdown_s=config.clean_shutdown_timeout_s,
                            soft_reboot_s=config.soft_reboot_timeout_s)
    runner = JobRunner(deps, {JobKind.CREATE: CreateWorkflow(deps, injector),
                              JobKind.DELETE: DeleteWorkflow(deps),
                              **action_workflows(deps, injector, timings)}, metrics=metrics)
    service = ServerService(store, images, flavors, config.limits, config.password_policy,
                            kick=runner.kick, ports=PortService(store, catalog, limits=config.limits),
                            name_template=config.multi_instance_display_name_template)
    monitor = PowerMonitor(store, hypervisor, kick=runner.kick,
                           resync_interval_s=config.resync_interval_s, metrics=metrics)
    notifier = EventNotifier()
    store.set_event_listener(notifier.poke)
    webhooks = WebhookDispatcher(store, HttpxWebhookSender(), notifier,
                                 message_id_prefix=f"evt-{config.host}-")
    return Agent(config, store, hypervisor, runner, service, images, flavors, monitor,
                 ports=service.ports, network=network, metrics=metrics, notifier=notifier,
                 webhooks=webhooks, disk_injector=disk_injector,
                 keypairs=KeypairService(store, CryptographySshKeys(), config.limits),
                 feed_slots=StreamSlots(config.event_streams_max, config.event_streams_per_token))


# At most this many images get spares in the appliance warmed at start (each adds
# injection_warm_spares drives); the others get theirs after their first build.
WARM_AT_START_IMAGES = 4


def warm_for_images(agent: Agent) -> None:
    """Warm the appliance at start for the images present (their bases are made in the
    warm-up's thread if missing), so that the first build after a start does not wait
    for a launch. Nothing when warm spares are off or no image is present."""
    injector = agent.disk_injector
    if injector is None or injector.spares_per_base < 1:
        return
    deps = agent.runner.deps
    sources: dict[Path, tuple[Path, str]] = {}
    for image in agent.images.list()[:WARM_AT_START_IMAGES]:
        try:
            sources[base_path(deps, image)] = (image.disk_file, image.disk_format)
        except OSError as e:  # an image file gone since the catalog read it
            log.warning("injection.warm_image_unreadable", image=str(image.uuid), error=e.strerror)
    if not sources:
        return

    def make_bases() -> None:
        for base, (source, _) in sources.items():
            deps.disks.cache_base(source, base)

    injector.warm_up_for({base: fmt for base, (_, fmt) in sources.items()}, make_bases)


class _Listener(uvicorn.Server):
    """One API listener; the daemon, not uvicorn, owns the signal handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _listener(app: Any, limits: HttpLimits) -> _Listener:
    """A listener with its own connection counts and bounds (agent/adapters/http_guard.py);
    WebSockets (only the serial console route serves one) with small frames: keystrokes."""
    return _Listener(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                                    timeout_graceful_shutdown=5, http=guarded_protocol(limits),
                                    ws="websockets", ws_max_size=64 * 1024, ws_max_queue=8,
                                    timeout_keep_alive=limits.keep_alive_s))


async def _watchdog(interval: float) -> None:
    while True:  # pings only while the event loop turns: a stuck loop gets restarted
        sd_notify("WATCHDOG=1")
        await asyncio.sleep(interval)


async def serve(config: Config, reread: Callable[[], Config] | None = None) -> int:
    # First of all: a second daemon on this state dir would sweep, kill the appliances and
    # run the jobs of the first. Held until the process ends (the kernel drops it then).
    config.state_dir.mkdir(parents=True, exist_ok=True)
    state_lock = StateDirLock(config.state_dir)
    state_lock.acquire()
    try:
        return await _serve_locked(config, reread)
    finally:
        state_lock.release()


async def _serve_locked(config: Config, reread: Callable[[], Config] | None) -> int:
    loop = asyncio.get_running_loop()
    install_event_loop(loop)  # before any libvirt connection is opened
    agent = build_agent(config)
    # Before the API listens and any job resumes: nothing may create a guest meanwhile.
    stale = kill_stale_appliances(config.instances_dir)
    if stale:
        log.warning("recovery.stale_appliances_killed", pids=stale)
    swept = await sweep(agent.runner.deps)
    _report_quarantine(agent, swept)
    warm_for_images(agent)  # after the stale appliances went, before any build resumes
    if agent.network is not None:  # bridges, taps lost to a host reboot, dnsmasq: as the store says
        await agent.network.resync_host(agent.hypervisor)
    listeners: list[tuple[_Listener, Any]] = []
    unix_ctx = (RequestContext(project_id=config.unix_socket_project, user_id="local")
                if config.unix_socket_project else None)
    limits = config.http.model_copy(update={"max_connections": connections_per_listener(
        config.http.max_connections, 2 if config.api_listen else 1)})
    listeners.append((_listener(agent.api(unix_ctx), limits),
                      unix_listener(config.socket_path, config.api_socket_mode,
                                    config.api_socket_group)))
    if config.api_listen:
        listeners.append((_listener(agent.api(None), limits), tcp_listener(config.api_listen)))

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, agent.reload, reread or (lambda: config))
    tasks = [asyncio.create_task(server.serve(sockets=[sock])) for server, sock in listeners]
    resumed = agent.runner.resume_all()
    agent.configure_webhooks(config)  # delivery tasks: each resumes from its durable cursor
    events = LibvirtEventSource(config.libvirt_uri)
    background = [asyncio.create_task(agent.monitor.run()), asyncio.create_task(
        events.run(agent.monitor.notify, agent.monitor.connection_changed))]
    if agent.network is not None:
        background.append(asyncio.create_task(agent.network.supervise()))
    reconcile_started = loop.time()
    agent.monitor.resync()  # the start-up reconcile: every server against libvirt
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(agent.monitor.idle(), STARTUP_RECONCILE_TIMEOUT_S)
    while not all(server.started for server, _ in listeners):
        if any(t.done() for t in tasks):
            break
        await asyncio.sleep(0.01)
    # Start-up made ~100k long-lived objects (modules, routes, models): moved out of the
    # collector's generations, so full collections no longer walk them (a full pass over
    # them took tens of ms, and the API's requests paid it).
    gc.collect()
    gc.freeze()
    log.info("agent.ready", socket=str(config.socket_path), tcp=config.api_listen,
             jobs_resumed=resumed, orphans_removed=len(swept.domains_removed) + len(swept.dirs_removed),
             quarantined=len(swept.quarantined),
             reconcile_s=round(loop.time() - reconcile_started, 3))
    sd_notify("READY=1", "STATUS=serving")
    interval = watchdog_interval()
    watchdog = asyncio.create_task(_watchdog(interval)) if interval else None

    await stop.wait()
    log.info("agent.stopping")
    sd_notify("STOPPING=1")
    for server, _ in listeners:
        server.should_exit = True
    agent.notifier.close()  # ends event streams and long polls, so the listeners can stop
    await agent.runner.stop(timeout=STOP_TIMEOUT_S)
    # A job paused mid-injection leaves its appliance working in a thread that the exit
    # waits for (minutes for a big batch): end it; the job redoes that disk on restart.
    kill_stale_appliances(config.instances_dir)
    if agent.webhooks is not None:
        await agent.webhooks.close()
    for task in background:
        task.cancel()
    await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)
    if watchdog:
        watchdog.cancel()
    if agent.network is not None:
        await agent.network.close()
    agent.close()
    with contextlib.suppress(FileNotFoundError):
        config.socket_path.unlink()
    log.info("agent.stopped")
    return 0
