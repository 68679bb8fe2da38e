#!/usr/bin/env bash
# The fleet's broker for compute-agent (issue 12): Debian's rabbitmq-server listening on
# loopback only, started by hand where systemd is not PID 1, with its own vhost and user.
# Run by setup-host.sh (which installs the package); idempotent, and quick when all is in
# place: a file comparison and two rabbitmqctl calls.
set -euo pipefail

log() { printf 'setup-rabbitmq: %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "setup-rabbitmq: must run as root (writes /etc/rabbitmq, starts the broker)" >&2
  exit 1
fi

# --- listeners: loopback only --------------------------------------------------------
# Debian's broker listens on every address (AMQP 5672, Erlang distribution 25672, epmd
# 4369). Agents on this host need loopback only; opening AMQP to other hosts is the
# operator's decision (README "Fleet": TLS on 5671). A rabbitmq.conf that setup did not
# write is the operator's own and stays as it is.
RABBIT_CONF=/etc/rabbitmq/rabbitmq.conf
RABBIT_ENV_CONF=/etc/rabbitmq/rabbitmq-env.conf
MARK="# Written by compute-agent's scripts/setup-rabbitmq.sh"
read -r -d '' WANTED_CONF <<CONF || true
$MARK (edit it, then drop this line,
# and setup leaves it to you). README "Fleet" says how to open the broker to other hosts.
# AMQP clients: this host only.
listeners.tcp.default = 127.0.0.1:5672
# Erlang distribution (rabbitmqctl, clustering): this host only.
distribution.listener.interface = 127.0.0.1
# No plugin is enabled. Enabling rabbitmq_management: add "management.tcp.ip = 127.0.0.1"
# here first (not before: a key of a plugin that is off stops the broker from booting).
CONF
changed=0
if [ ! -e "$RABBIT_CONF" ] || head -n 1 "$RABBIT_CONF" | grep -qF "$MARK"; then
  if [ "$(cat "$RABBIT_CONF" 2>/dev/null)" != "$WANTED_CONF" ]; then
    log "writing $RABBIT_CONF (listeners on 127.0.0.1)"
    install -d -m 0755 /etc/rabbitmq
    printf '%s\n' "$WANTED_CONF" > "$RABBIT_CONF.tmp"
    chmod 0644 "$RABBIT_CONF.tmp"
    mv "$RABBIT_CONF.tmp" "$RABBIT_CONF"
    changed=1
  fi
else
  log "$RABBIT_CONF is not setup's: left as it is"
fi
# epmd (the Erlang port mapper) reads its address from the environment of the node that
# starts it; rabbitmq-env.conf is sourced by every rabbitmq script.
if ! grep -q 'ERL_EPMD_ADDRESS' "$RABBIT_ENV_CONF" 2>/dev/null; then
  log "epmd on loopback only ($RABBIT_ENV_CONF)"
  printf '\n%s: epmd on this host only.\nexport ERL_EPMD_ADDRESS=127.0.0.1\n' "$MARK" >> "$RABBIT_ENV_CONF"
  changed=1
fi

rabbit_alive() { rabbitmq-diagnostics -q ping >/dev/null 2>&1; }
if [ "$changed" = 1 ] && rabbit_alive; then
  log "restarting rabbitmq-server for its new listeners"
  if [ -d /run/systemd/system ]; then
    systemctl restart rabbitmq-server.service
  else
    rabbitmqctl -q shutdown >/dev/null  # returns once the node is gone
    epmd -kill >/dev/null 2>&1 || true  # comes back on loopback with the next start
  fi
fi
if rabbit_alive; then
  log "rabbitmq running"
elif [ -d /run/systemd/system ]; then
  log "starting rabbitmq-server through systemd"
  systemctl start rabbitmq-server.service
else
  log "starting rabbitmq-server"
  (cd / && rabbitmq-server -detached)
  # await_startup needs the Erlang node up first: retry until the broker itself answers.
  for _ in $(seq 1 60); do rabbitmqctl -q await_startup --timeout 5 >/dev/null 2>&1 && break; sleep 1; done
  rabbit_alive || { echo "setup-rabbitmq: rabbitmq-server did not come up" >&2; exit 1; }
fi

# --- vhost and user ----------------------------------------------------------------------
# The user's password is generated once into a root-only file the agent reads; guest is
# removed, so nothing can log in as guest/guest. Passwords reach rabbitmqctl on stdin,
# never in argv (where `ps` would show them). Each rabbitmqctl call costs about a second:
# when the broker already lets our user into our vhost, two calls and done.
AMQP_VHOST="${AMQP_VHOST:-compute}"  # as [amqp] vhost in the agent's config
AMQP_USER="${AMQP_USER:-compute-agent}"  # as the user in [amqp] url
AMQP_SECRET=/etc/compute-agent/amqp.secret
amqp_user_ready() {
  [ -s "$AMQP_SECRET" ] \
    && rabbitmqctl -q authenticate_user "$AMQP_USER" <"$AMQP_SECRET" >/dev/null 2>&1 \
    && rabbitmqctl -q list_permissions -p "$AMQP_VHOST" --no-table-headers 2>/dev/null \
         | grep -q "^$AMQP_USER"$'\t'
}
# The fleet's shared secret ([amqp] fleet_token_file): agents send it to fetch job tickets
# from the controller (X-Fleet-Token). Root-only; made once.
FLEET_SECRET=/etc/compute-agent/fleet.secret
if [ ! -s "$FLEET_SECRET" ]; then
  log "generating the fleet token into $FLEET_SECRET"
  install -d -m 0755 /etc/compute-agent
  (umask 077; head -c 32 /dev/urandom | base64 | tr -d '/+=' > "$FLEET_SECRET.tmp")
  mv "$FLEET_SECRET.tmp" "$FLEET_SECRET"
fi
chmod 0600 "$FLEET_SECRET"
if amqp_user_ready; then
  log "vhost $AMQP_VHOST and user $AMQP_USER ready"
  exit 0
fi
if [ ! -s "$AMQP_SECRET" ]; then
  log "generating the AMQP password into $AMQP_SECRET"
  install -d -m 0755 /etc/compute-agent
  (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$AMQP_SECRET.tmp")
  mv "$AMQP_SECRET.tmp" "$AMQP_SECRET"
fi
chmod 0600 "$AMQP_SECRET"
users="$(rabbitmqctl -q list_users --no-table-headers 2>/dev/null | cut -f1)"
if grep -qx guest <<<"$users"; then
  log "removing the AMQP guest user"
  rabbitmqctl -q delete_user guest >/dev/null
fi
if ! grep -qx -- "$AMQP_USER" <<<"$users"; then
  log "creating AMQP user $AMQP_USER"
  rabbitmqctl -q add_user "$AMQP_USER" <"$AMQP_SECRET" >/dev/null
elif ! rabbitmqctl -q authenticate_user "$AMQP_USER" <"$AMQP_SECRET" >/dev/null 2>&1; then
  log "resetting the AMQP password of $AMQP_USER to $AMQP_SECRET"
  rabbitmqctl -q change_password "$AMQP_USER" <"$AMQP_SECRET" >/dev/null
fi
rabbitmqctl -q add_vhost "$AMQP_VHOST" >/dev/null 2>&1 || true  # exists already: fine
rabbitmqctl -q set_permissions -p "$AMQP_VHOST" "$AMQP_USER" '.*' '.*' '.*' >/dev/null
amqp_user_ready || { echo "setup-rabbitmq: AMQP user $AMQP_USER cannot use vhost $AMQP_VHOST" >&2; exit 1; }
log "vhost $AMQP_VHOST and user $AMQP_USER ready"
