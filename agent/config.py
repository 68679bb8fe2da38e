"""Configuration: a TOML file, then COMPUTE_AGENT_* environment variables, then flags.

`state_dir` puts everything the daemon writes (database, socket, guest disks, consoles)
under one folder unless a path is set explicitly, which is what tests and demos use.
"""

from __future__ import annotations

import base64
import binascii
import os
import socket
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from agent.errors import ConfigError
from agent.model.flavor import DEFAULT_FLAVORS, Flavor
from agent.model.fleet import HostName
from agent.model.network import Network
from agent.model.passwords import PasswordPolicy
from agent.model.requests import DEFAULT_NAME_TEMPLATE, Limits, check_name_template
from agent.model.scheduling import SchedulerSettings

DEFAULT_CONFIG_FILE = Path("/etc/compute-agent/agent.toml")
ENV_PREFIX = "COMPUTE_AGENT_"
UNIX_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1
WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks spelling of a secret
WEBHOOK_SECRET_MIN_BYTES = 24  # what the Standard Webhooks spec asks of a signing key


class TokenConfig(BaseModel):
    """An API token and who it speaks for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token: SecretStr
    project_id: str = Field(min_length=1, max_length=255)
    user_id: str = Field(min_length=1, max_length=255)
    admin: bool = False

    @field_validator("token")
    @classmethod
    def _sendable(cls, token: SecretStr) -> SecretStr:
        """A token is what a client sends in X-Auth-Token: an empty one would make an absent
        value a key, and spaces or control characters cannot survive a header."""
        value = token.get_secret_value()
        if not value or not all("!" <= c <= "~" for c in value):
            raise ValueError("a token must be one or more visible ASCII characters "
                             "(no spaces, not empty)")
        return token


def webhook_key(secret: str) -> bytes:
    """The signing key of a "whsec_<base64>" secret (ValueError if it is not one)."""
    if not secret.startswith(WEBHOOK_SECRET_PREFIX):
        raise ValueError(f"webhooks: a secret must be {WEBHOOK_SECRET_PREFIX}<base64>")
    try:
        key = base64.b64decode(secret.removeprefix(WEBHOOK_SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"webhooks: a secret must be {WEBHOOK_SECRET_PREFIX}<base64>") from None
    if len(key) < WEBHOOK_SECRET_MIN_BYTES:
        raise ValueError(f"webhooks: a secret must hold at least {WEBHOOK_SECRET_MIN_BYTES} "
                         "random bytes (say, whsec_ + `openssl rand -base64 32`)")
    return key


class HttpLimits(BaseModel):
    """[http]: what one client can hold of a listener (each listener has its own counts).
    Requests past a bound are refused as Nova's WSGI server would (414, 431, 408, 413),
    connections past one get a 503 (the listener's) or 429 (the client's) and are closed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_connections: int = Field(default=512, ge=1, le=65536)
    # Per peer address on TCP (one NAT or proxy counts as one client).
    max_connections_per_client: int = Field(default=128, ge=1, le=65536)
    header_timeout_s: float = Field(default=10.0, gt=0, le=300)  # until a request's headers are in
    body_timeout_s: float = Field(default=30.0, gt=0, le=600)  # until its body is in
    keep_alive_s: float = Field(default=5.0, gt=0, le=300)  # idle between requests
    max_request_line: int = Field(default=8192, ge=256, le=1 << 20)  # eventlet.wsgi's
    max_header_bytes: int = Field(default=65536, ge=1024, le=1 << 22)  # all header lines


class WebhookConfig(BaseModel):
    """A URL that gets every status event POSTed to it (see agent/core/webhooks.py)."""

    # The URL's user info, path or query may hold a token: errors and reprs do not show it.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    url: str = Field(min_length=1, max_length=2048, repr=False)
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    # Extra request headers (say, Authorization): secrets, never logged.
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    # "whsec_<base64>": bodies are signed as the Standard Webhooks spec says (webhook-id,
    # webhook-timestamp, webhook-signature); None: sent unsigned (a warning at start).
    secret: SecretStr | None = None

    @field_validator("secret")
    @classmethod
    def _a_signing_key(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None:
            webhook_key(secret.get_secret_value())
        return secret

    @model_validator(mode="after")
    def _http_only(self) -> WebhookConfig:
        try:
            parts = urlsplit(self.url)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
        except ValueError:  # a bad IPv6 literal or port
            ok = False
        if not ok:
            raise ValueError("webhooks: a url must be http:// or https:// with a host")
        return self


class AmqpConfig(BaseModel):
    """[amqp]: the fleet's broker (RabbitMQ). Absent: single-host mode, no broker."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # amqp://USER@HOST:PORT (or amqps://); never a password here: it is read from
    # password_file, which setup generates (root-only).
    url: str = "amqp://compute-agent@127.0.0.1:5672"
    vhost: str = Field(default="compute", min_length=1, max_length=255)
    password_file: Path = Path("/etc/compute-agent/amqp.secret")
    # AMQP heartbeats (a dead connection is noticed within this) and the fleet heartbeat
    # interval; three missed fleet heartbeats: the host is down.
    heartbeat_s: int = Field(default=10, ge=1, le=600)
    # This host's name in the fleet (queue compute.<host>); default: the top-level `host`.
    host: HostName | None = None
    prefetch: int = Field(default=8, ge=1, le=1000)  # jobs delivered but not yet acked
    reconnect_initial_s: float = Field(default=0.5, gt=0, le=60)  # backoff with jitter ...
    # ... capped here: the longest a host stays away from a broker that is back. A refused
    # connect every few seconds costs a booting broker nothing (it listens only once booted).
    reconnect_max_s: float = Field(default=5.0, gt=0, le=600)
    # Publishes that may wait for a lost connection at once; more callers wait for a slot.
    max_pending_publishes: int = Field(default=1000, ge=1, le=100000)
    # The agent fetches each job's ticket (its inputs) from the controller here:
    # http(s)://HOST[:PORT][/prefix]; an agent in fleet mode needs it, the controller not.
    controller_url: str | None = Field(default=None, max_length=2048)
    # The secret shared by the controller and its agents (header X-Fleet-Token), one line
    # in a root-only file that setup makes; read at start, never logged.
    fleet_token_file: Path = Path("/etc/compute-agent/fleet.secret")

    @field_validator("controller_url")
    @classmethod
    def _controller_http(cls, url: str | None) -> str | None:
        if url is None:
            return None
        try:
            parts = urlsplit(url)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
        except ValueError:
            ok = False
        if not ok:
            raise ValueError("amqp: controller_url must be http:// or https:// with a host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("amqp: controller_url must not hold user info; the agent "
                             "authenticates with fleet_token_file")
        if parts.query or parts.fragment:
            raise ValueError("amqp: controller_url must not have a query or fragment")
        return url.rstrip("/")

    @model_validator(mode="after")
    def _no_password_in_url(self) -> AmqpConfig:
        try:
            parts = urlsplit(self.url)
            ok = parts.scheme in ("amqp", "amqps") and bool(parts.hostname) and parts.port != 0
        except ValueError:
            ok = False
        if not ok:
            raise ValueError("amqp: url must be amqp://USER@HOST[:PORT] (or amqps://)")
        if parts.password is not None:
            raise ValueError("amqp: url must not hold a password; it is read from password_file")
        if not parts.username:
            raise ValueError("amqp: url must name the user (amqp://USER@HOST)")
        if parts.path not in ("", "/"):
            raise ValueError("amqp: the vhost is given as `vhost`, not in the url")
        return self


class Config(BaseModel):
    # Errors name the field, not its value: a value may be a token or a webhook URL's secret.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    state_dir: Path = Path("/var/lib/compute-agent")
    api_socket: Path | None = None  # default: /run/compute-agent/api.sock, or under state_dir
    api_socket_mode: int = 0o660
    api_socket_group: str | None = None
    api_listen: str | None = None  # "host:port" for a TCP listener; tokens always required
    # A project the unix socket speaks for when a request has no token (local debugging).
    unix_socket_project: str | None = None
    tokens: list[TokenConfig] = Field(default_factory=list)
    http: HttpLimits = Field(default_factory=HttpLimits)
    # Event streams and long polls open at once (each holds a connection and a waiter):
    # in all, and per token; past either, a 429.
    event_streams_max: int = Field(default=64, ge=1, le=10000)
    event_streams_per_token: int = Field(default=4, ge=1, le=10000)
    host: str = Field(default_factory=socket.gethostname)
    flavors: list[Flavor] = Field(default_factory=lambda: list(DEFAULT_FLAVORS))
    limits: Limits = Field(default_factory=Limits)
    password_policy: PasswordPolicy = Field(default_factory=PasswordPolicy)
    # Names of a multi-create's servers (min_count/max_count), as Nova's option of the name.
    multi_instance_display_name_template: str = DEFAULT_NAME_TEMPLATE
    # An injection waits up to this long for builds still making their disks, to share
    # one appliance with them; a lone build does not wait.
    injection_batch_window_s: float = Field(default=0.5, ge=0, le=10)
    injection_max_batch: int = Field(default=8, ge=1, le=26)
    # Spare overlays per recently used image kept in a warm (launched) appliance, so a
    # build does not wait for a launch; 0 launches one per batch. The appliance is warmed
    # at start for the images present (up to 4). Each warm appliance holds up to
    # libguestfs's memsize of RAM while idle.
    injection_warm_spares: int = Field(default=2, ge=0, le=8)
    # A warm appliance no build took for this long after it became ready is shut down
    # (its QEMU, ~800 MiB under TCG, and ~4 MiB of the daemon's); the next build then
    # launches its own and the appliance is warmed again after it.
    injection_warm_idle_s: float = Field(default=300.0, ge=1, le=86400)
    # The monitor's backstop: every server against libvirt this often, events or not.
    resync_interval_s: float = Field(default=60.0, gt=0)
    # Actions: how long a guest gets to power off on the ACPI button before the plug is
    # pulled (stop, resize, rebuild, ...), and before a soft reboot becomes a hard one.
    clean_shutdown_timeout_s: float = Field(default=60.0, ge=0)
    soft_reboot_timeout_s: float = Field(default=120.0, ge=0)
    libvirt_uri: str = "qemu:///system"
    virt_type: Literal["auto", "kvm", "qemu"] = "auto"
    image_dirs: list[Path] = Field(default_factory=lambda: [Path("/var/lib/compute-agent/images")])
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    # [[networks]]: bridges, subnets and DHCP of this host (see agent/model/network.py).
    networks: list[Network] = Field(default_factory=list)
    dnsmasq_binary: str = "dnsmasq"
    dhcp_lease_time: str = Field(default="24h", pattern=r"^(infinite|\d+[smhd]?)$")
    # [[webhooks]]: every status event is POSTed to each, at least once, in order; failed
    # deliveries are retried with exponential backoff (with jitter) up to this cap.
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    webhook_backoff_initial_s: float = Field(default=1.0, gt=0)
    webhook_backoff_max_s: float = Field(default=60.0, gt=0)
    amqp: AmqpConfig | None = None  # the fleet's broker; None: single-host mode
    # [scheduler]: the controller's allocation ratios (Nova's defaults).
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)

    @model_validator(mode="after")
    def _distinct_networks(self) -> Config:
        for attr in ("id", "name", "bridge"):
            values = [getattr(n, attr) for n in self.networks]
            if len(set(values)) != len(values):
                raise ValueError(f"networks: two networks have the same {attr}")
        for i, a in enumerate(self.networks):
            for b in self.networks[i + 1:]:
                if a.cidr.overlaps(b.cidr):
                    raise ValueError(f"networks {a.name} and {b.name}: cidrs {a.cidr} and "
                                     f"{b.cidr} overlap")
        return self

    @model_validator(mode="after")
    def _name_template_formats(self) -> Config:
        check_name_template(self.multi_instance_display_name_template)
        return self

    @model_validator(mode="after")
    def _distinct_tokens(self) -> Config:
        """Two entries with one token: which project it speaks for would be an accident of
        order. The error names the entries, never the token."""
        first: dict[str, int] = {}
        for i, t in enumerate(self.tokens):
            seen = first.setdefault(t.token.get_secret_value(), i)
            if seen != i:
                raise ValueError(f"tokens: entries {seen + 1} and {i + 1} have the same token; "
                                 "each token must be given once")
        return self

    @model_validator(mode="after")
    def _distinct_webhooks(self) -> Config:
        urls = [w.url for w in self.webhooks]
        if len(set(urls)) != len(urls):
            raise ValueError("webhooks: two webhooks have the same url")
        return self

    @model_validator(mode="after")
    def _console_sockets_fit(self) -> Config:
        """Each guest's console is a unix socket under the state dir; Linux allows 107
        bytes for its path, and QEMU fails every start beyond that."""
        longest = self.instances_dir / ("0" * 36) / "console.sock"
        if len(str(longest).encode()) > UNIX_PATH_MAX:
            raise ValueError(f"state_dir {self.state_dir} is too long: guest console sockets "
                             f"under it would exceed {UNIX_PATH_MAX} bytes; use a shorter path")
        return self

    @property
    def socket_path(self) -> Path:
        if self.api_socket is not None:
            return self.api_socket
        if self.state_dir != Config.model_fields["state_dir"].default:
            return self.state_dir / "api.sock"
        return Path("/run/compute-agent/api.sock")

    @property
    def fleet_host(self) -> str:
        """This host's name in the fleet ([amqp] host, else `host`)."""
        return (self.amqp.host if self.amqp and self.amqp.host else None) or self.host

    @property
    def database_path(self) -> Path:
        return self.state_dir / "agent.db"

    @property
    def controller_database_path(self) -> Path:
        """The controller's store (`compute-agent controller serve`, issue 12)."""
        return self.state_dir / "controller.db"

    @property
    def instances_dir(self) -> Path:
        return self.state_dir / "instances"

    @property
    def base_images_dir(self) -> Path:
        return self.state_dir / "_base"


def _from_env(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in Config.model_fields:
        value = environ.get(ENV_PREFIX + name.upper())
        if value is None:
            continue
        out[name] = value.split(os.pathsep) if name == "image_dirs" else value
    return out


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None,
                environ: dict[str, str] | None = None) -> Config:
    """Merge file < environment < overrides (flags). A missing default file is fine;
    a missing file that was asked for is an error."""
    data: dict[str, Any] = {}
    file = path or DEFAULT_CONFIG_FILE
    if file.exists():
        try:
            data.update(tomllib.loads(file.read_text()))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"cannot read config {file}: {e}") from e
    elif path is not None:
        raise ConfigError(f"config file {path} does not exist")
    data.update(_from_env(dict(os.environ) if environ is None else environ))
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return Config(**data)
    except ValidationError as e:
        raise ConfigError(f"invalid configuration: {e}") from e
