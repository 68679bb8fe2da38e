"""Composition root: the one place that picks concrete adapters and wires them into the
core services (build_agent), and what the daemon is made of (Agent)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import structlog

from agent.adapters.console_files import LocalConsoleFiles
from agent.adapters.dnsmasq import DnsmasqDhcp
from agent.adapters.host_checks import start_checks, virt_decision
from agent.adapters.image_catalog import WritableImageCatalog
from agent.adapters.injector_process import InjectorProcess, WorkerSettings
from agent.adapters.libvirt_hypervisor import LibvirtHypervisor
from agent.adapters.netlink import NetlinkPlumber
from agent.adapters.nft_guard import NftPortGuard
from agent.adapters.qemu_img import QemuImgDisks
from agent.adapters.sqlite_store import SqliteStore
from agent.adapters.ssh_keys import CryptographySshKeys
from agent.adapters.webhook_http import HttpxWebhookSender
from agent.api.app import ApiDeps, create_api
from agent.api.auth import TokenInfo
from agent.config import Config, webhook_key
from agent.core.console import Consoles, console_log, console_socket
from agent.core.doctor import run_checks
from agent.core.event_feed import EventFeed, EventNotifier, StreamSlots
from agent.core.flavors import FlavorCatalog
from agent.core.images import ImageService, images_to_warm
from agent.core.injection import InjectionBatcher
from agent.core.jobs import JobRunner
from agent.core.keypairs import KeypairService
from agent.core.metrics import Metrics
from agent.core.monitor import PowerMonitor
from agent.core.netplumbing import NetworkPlumbing
from agent.core.networks import NetworkCatalog, PortService
from agent.core.recovery import SweepReport
from agent.core.servers import ServerService
from agent.core.webhooks import Backoff, WebhookDispatcher, WebhookTarget
from agent.core.workflows.actions import action_workflows
from agent.core.workflows.base import CheckpointHook, WorkflowDeps
from agent.core.workflows.create import CreateWorkflow, base_path
from agent.core.workflows.delete import DeleteWorkflow
from agent.core.workflows.guest_ops import ActionTimings
from agent.errors import ConfigError, HostUnfit
from agent.log import configure_logging
from agent.model.job import Job, JobKind
from agent.model.requests import RequestContext

log = structlog.get_logger("agent.app")

# Fault injection for the crash-safety tests: "create:domain" kills the daemon (as kill -9
# would) right after that checkpoint is committed. Never set in production.
CRASH_AT_ENV = "COMPUTE_AGENT_TEST_CRASH_AT"
# "create:injected" kills it every time that step's work is done, before its checkpoint:
# a step that always crashes the daemon (the poison-job guard's test). Never in production.
CRASH_IN_ENV = "COMPUTE_AGENT_TEST_CRASH_IN"
SPARES_DIR = "_spares"  # the warm appliance's spare overlays, under the instances folder


def refuse_unfit_host(config: Config) -> None:
    """HostUnfit, naming every reason, when the host would fail every build: better a
    daemon that does not start than one whose every server ends in ERROR."""
    failed = [r for r in run_checks(start_checks(config)).results if not r.ok]
    if failed:
        raise HostUnfit("this host cannot build servers: "
                        + "; ".join(f"{r.name}: {r.detail} (fix: {r.fix})" for r in failed))


def report_quarantine(agent: Agent, swept: SweepReport) -> None:
    """Quarantined taps stay plugged and are never given to a new port; the gauge counts."""
    agent.network.quarantined_taps = swept.quarantined_taps
    for kind in ("domain", "instance_dir"):
        agent.metrics.quarantined.labels(kind).set(sum(q.kind == kind for q in swept.quarantined))


def _crash_hook(env: str = CRASH_AT_ENV) -> CheckpointHook:
    target = os.environ.get(env)

    def hook(job: Job, step: str) -> None:
        if target and f"{job.kind.value}:{step}" == target:
            os._exit(137)

    return hook


def load_tokens(tokens: dict[str, TokenInfo], config: Config) -> None:
    """The config's API tokens into `tokens`, in place (every listener shares the dict)."""
    fresh = {t.token.get_secret_value(): TokenInfo(project_id=t.project_id, user_id=t.user_id,
                                                   is_admin=t.admin) for t in config.tokens}
    tokens.clear()
    tokens.update(fresh)


def configure_webhooks(webhooks: WebhookDispatcher, config: Config) -> None:
    webhooks.configure(
        [WebhookTarget(w.url, w.timeout_s, {k: v.get_secret_value() for k, v in w.headers.items()},
                       secret=webhook_key(w.secret.get_secret_value()) if w.secret else None)
         for w in config.webhooks],
        Backoff(config.webhook_backoff_initial_s, config.webhook_backoff_max_s))


@dataclass(frozen=True)
class ApiServices:
    """The core services only the API uses (the others are the Agent's own)."""

    images: ImageService
    events: EventFeed
    keypairs: KeypairService
    consoles: Consoles


class ServesApi:
    """The API and the SIGHUP reload, as the agent and the controller both have them (each a
    dataclass with these fields)."""

    config: Config
    service: ServerService
    flavors: FlavorCatalog
    notifier: EventNotifier
    webhooks: WebhookDispatcher
    metrics: Metrics
    api_services: ApiServices
    tokens: dict[str, TokenInfo]

    def api_extra(self) -> dict[str, Any]:
        """What this daemon's API has beyond the common services (ApiDeps fields)."""
        return {}

    def api(self, default_context: RequestContext | None) -> Any:
        if not self.tokens:
            load_tokens(self.tokens, self.config)
        s = self.api_services
        return create_api(ApiDeps(servers=self.service, flavors=self.flavors, images=s.images,
                                  quotas=self.service.quotas, ports=self.service.ports,
                                  events=s.events, keypairs=s.keypairs, consoles=s.consoles,
                                  host_id=self.config.fleet_host, tokens=self.tokens,
                                  default_context=default_context,
                                  body_timeout_s=self.config.http.body_timeout_s,
                                  metrics=self.metrics, **self.api_extra()))

    def reload(self, reread: Callable[[], Config]) -> None:
        """SIGHUP: what can change live (log level and format, tokens, webhooks). A bad file keeps
        the running configuration and says why."""
        try:
            config = reread()
        except ConfigError as e:
            log.error("config.reload_failed", error=str(e))
            return
        configure_logging(config.log_level, config.log_format)
        load_tokens(self.tokens, config)
        self.notifier.poke()  # streams and long polls re-check their tokens now
        configure_webhooks(self.webhooks, config)
        log.info("config.reloaded", tokens=len(self.tokens), log_level=config.log_level)


@dataclass
class Agent(ServesApi):
    """Everything the daemon is made of, wired."""

    config: Config
    store: SqliteStore
    hypervisor: LibvirtHypervisor
    runner: JobRunner
    service: ServerService
    images: WritableImageCatalog
    flavors: FlavorCatalog
    monitor: PowerMonitor
    network: NetworkPlumbing
    # Woken by the store after each commit that appended events: the feed and webhooks wait on it.
    notifier: EventNotifier
    webhooks: WebhookDispatcher
    metrics: Metrics
    disk_injector: InjectorProcess
    # The API's core services, built once and shared by every listener.
    api_services: ApiServices
    # Shared by every listener and changed in place on SIGHUP, so a reload needs no restart.
    tokens: dict[str, TokenInfo] = field(default_factory=dict)

    def api_extra(self) -> dict[str, Any]:
        return {"fleet_controller": self.config.amqp.controller_url if self.config.amqp else None}

    def configure_webhooks(self, config: Config) -> None:
        configure_webhooks(self.webhooks, config)

    def close(self) -> None:
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
    # libguestfs runs in a worker process the daemon starts when it needs one.
    disk_injector = InjectorProcess(WorkerSettings(
        virt_type=decision.virt_type.value, spares_dir=str(config.instances_dir / SPARES_DIR),
        spares_per_base=config.injection_warm_spares, idle_s=config.injection_warm_idle_s,
        log_level=config.log_level, log_format=config.log_format))
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
    api_services = ApiServices(
        images=ImageService(images, store),
        events=EventFeed(store, notifier, slots=StreamSlots(config.event_streams_max,
                                                            config.event_streams_per_token)),
        keypairs=KeypairService(store, CryptographySshKeys(), config.limits),
        consoles=Consoles(LocalConsoleFiles(partial(console_socket, config.instances_dir),
                                            partial(console_log, config.instances_dir))))
    return Agent(config, store, hypervisor, runner, service, images, flavors, monitor,
                 network=network, notifier=notifier, webhooks=webhooks, metrics=metrics,
                 disk_injector=disk_injector, api_services=api_services)


# At most this many images get spares in the appliance warmed at start (each adds
# injection_warm_spares drives); the others get theirs after their first build.
WARM_AT_START_IMAGES = 4


def warm_for_images(agent: Agent) -> None:
    """Warm the appliance at start for the images present (their bases are made in the
    worker's warm-up if missing), so that the first build after a start does not wait
    for a launch. Nothing when warm spares are off or no image is present."""
    injector = agent.disk_injector
    if injector.spares_per_base < 1:
        return
    deps = agent.runner.deps
    sources: dict[Path, tuple[Path, str]] = {}
    for image in images_to_warm(agent.images.list(), deps.store.list_servers(),
                                WARM_AT_START_IMAGES):
        try:
            sources[base_path(deps, image)] = (image.disk_file, image.disk_format)
        except OSError as e:  # an image file gone since the catalog read it
            log.warning("injection.warm_image_unreadable", image=str(image.uuid), error=e.strerror)
    if not sources:
        return
    injector.warm_up_for({base: fmt for base, (_, fmt) in sources.items()},
                         {base: source for base, (source, _) in sources.items()})


