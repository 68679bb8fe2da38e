#!/usr/bin/env bash
# Host setup for compute-agent: Debian packages, the libvirt daemons and the RabbitMQ broker
# (scripts/setup-rabbitmq.sh).
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

# RabbitMQ (the fleet's broker): its own script, also run alone by an operator.
"$(dirname "$0")/setup-rabbitmq.sh"
