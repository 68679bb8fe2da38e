#!/usr/bin/env bash
# Host setup for compute-agent: Debian packages, the libvirt daemons and the RabbitMQ broker.
# Idempotent and quick when everything is already in place (no apt-get call then).
set -euo pipefail

PACKAGES=(
  libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients
  qemu-system-x86 qemu-utils
  libguestfs-tools python3-guestfs supermin
  linux-image-amd64 busybox-static e2fsprogs cpio qemu-guest-agent
  dnsmasq-base iproute2
  python3-nftables
  mmdebstrap extlinux syslinux-common fdisk util-linux
  python3-venv python3-dev libvirt-dev pkg-config gcc
  rabbitmq-server
)

log() { printf 'setup-host: %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "setup-host: must run as root (installs packages, starts libvirtd)" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  log "packages present"
fi

# libvirtd: on a host with systemd as PID 1 let systemd own it; elsewhere (containers,
# CI runners) start the daemons ourselves when the socket is missing or dead.
libvirt_alive() { virsh -c qemu:///system version >/dev/null 2>&1; }
if libvirt_alive; then
  log "libvirtd running"
elif [ -d /run/systemd/system ]; then
  log "starting libvirtd through systemd"
  systemctl start virtlogd.socket libvirtd.socket libvirtd.service
else
  log "starting virtlogd and libvirtd"
  pgrep -x virtlogd >/dev/null || virtlogd -d
  pgrep -x libvirtd >/dev/null || libvirtd -d
  for _ in $(seq 1 50); do libvirt_alive && break; sleep 0.2; done
  libvirt_alive || { echo "setup-host: libvirtd did not come up" >&2; exit 1; }
fi

# RabbitMQ (the fleet's broker): started the same way, then its own vhost and user. The
# user's password is generated once into a root-only file the agent reads; guest is
# removed, so nothing can log in as guest/guest. Passwords reach rabbitmqctl on stdin,
# never in argv (where `ps` would show them). Each rabbitmqctl call costs about a second:
# when the broker already lets our user into our vhost, two calls and done.
AMQP_VHOST="${AMQP_VHOST:-compute}"  # as [amqp] vhost in the agent's config
AMQP_USER="${AMQP_USER:-compute-agent}"  # as the user in [amqp] url
AMQP_SECRET=/etc/compute-agent/amqp.secret
rabbit_alive() { rabbitmq-diagnostics -q ping >/dev/null 2>&1; }
amqp_user_ready() {
  [ -s "$AMQP_SECRET" ] \
    && rabbitmqctl -q authenticate_user "$AMQP_USER" <"$AMQP_SECRET" >/dev/null 2>&1 \
    && rabbitmqctl -q list_permissions -p "$AMQP_VHOST" --no-table-headers 2>/dev/null \
         | grep -q "^$AMQP_USER"$'\t'
}
setup_rabbitmq() {
  if rabbit_alive; then
    log "rabbitmq running"
  elif [ -d /run/systemd/system ]; then
    log "starting rabbitmq-server through systemd"
    systemctl start rabbitmq-server.service
  else
    log "starting rabbitmq-server"
    rabbitmq-server -detached
    # await_startup needs the Erlang node up first: retry until the broker itself answers.
    for _ in $(seq 1 60); do rabbitmqctl -q await_startup --timeout 5 >/dev/null 2>&1 && break; sleep 1; done
    rabbit_alive || { echo "setup-host: rabbitmq-server did not come up" >&2; exit 1; }
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
  amqp_user_ready || { echo "setup-host: AMQP user $AMQP_USER cannot use vhost $AMQP_VHOST" >&2; exit 1; }
  log "rabbitmq: vhost $AMQP_VHOST and user $AMQP_USER ready"
}
if amqp_user_ready; then
  log "rabbitmq running, vhost $AMQP_VHOST and user $AMQP_USER ready"
else
  setup_rabbitmq
fi
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
