#!/usr/bin/env bash
# Install everything the package needs on a Debian 12 machine: the apt
# packages (Podman for the lab, NGINX/HAProxy/wrk for the benchmark) and the
# pinned Python dependencies in .venv.  Safe to run again: it only does work
# when something is missing or pyproject.toml changed.  The first run needs
# root (apt); after it, any user who owns the checkout can run it again, as
# `make lint` and `make test-offline` do, and it changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

# The system interpreter, not whichever python3 comes first on PATH: a
# venv's python is a link to its base interpreter, and one under root's home
# (pyenv, say) would leave .venv unusable for every other user.
VENV_BASE=/usr/bin/python3
as_root=0
((EUID == 0)) && as_root=1

APT_PACKAGES=(
  podman runc debootstrap            # the lab: containers built offline
  openssh-client openssl curl        # Ansible's transport, certificate checks
  python3-venv                       # .venv on a Python without ensurepip
  nginx haproxy wrk nghttp2-client   # the benchmark runs them on loopback
  libnginx-mod-http-lua              # the benchmark's Lua balancer column (bench/changes.py)
  prometheus                         # promtool checks generated Prometheus configs
  mtail                              # tests/roles compiles the rendered mtail program
  keepalived                         # `keepalived -t` checks roles/edge_vip's configuration (tests/vip)
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})) && ((!as_root)); then
  echo "bootstrap: missing apt packages: ${missing[*]}; run \`sudo scripts/bootstrap.sh\` once" >&2
  exit 1
fi
if ((${#missing[@]})); then
  echo "bootstrap: apt-get install ${missing[*]}"
  # The host only runs NGINX/HAProxy for benchmarks: keep the packages from
  # starting services on ports 80 and 443 (policy-rc.d 101 = "do not start").
  # keepalived would not start anyway (its unit needs a keepalived.conf,
  # which nothing writes on the host), and must never float an address here.
  created_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    created_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  ((created_policy)) && rm -f /usr/sbin/policy-rc.d
fi

# This machine is the controller, not an edge node: it needs the packages'
# programs (the benchmark starts NGINX and HAProxy on loopback itself,
# promtool, keepalived -t, mtail --compile_only), never their services.
# Installing them enabled each unit (links in multi-user.target.wants and
# /etc/rc?.d), so after a reboot NGINX held :80 and Prometheus :9090, the
# ports the lab publishes.  Disable them every run, also where an earlier
# bootstrap or someone else installed them; a unit already disabled is left
# as it is.  Not masked: a disabled unit is enough for Debian's maintainer
# scripts (an upgrade neither enables nor starts it), and a mask would stop
# an operator who really wants one here with a less obvious error.
HOST_ONLY_TOOLS=(nginx haproxy prometheus keepalived mtail)
if ((!as_root)); then
  # Only root can disable a unit: say so rather than fail a lint run.
  for service in "${HOST_ONLY_TOOLS[@]}"; do
    if [[ "$(systemctl --root=/ is-enabled "$service.service" 2>/dev/null)" == enabled ]]; then
      echo "bootstrap: $service.service is enabled on this host; \`sudo scripts/bootstrap.sh\` disables it" >&2
    fi
  done
elif [[ -d /run/systemd/system ]]; then
  # systemd runs this machine: disable and stop in one go (the benchmark's
  # own processes are not these units and are left alone).
  for service in "${HOST_ONLY_TOOLS[@]}"; do
    if systemctl is-enabled --quiet "$service.service" 2>/dev/null || systemctl is-active --quiet "$service.service"; then
      echo "bootstrap: disabling and stopping $service.service (a tool here, not a service)"
      systemctl disable --now --quiet "$service.service"
    fi
  done
else
  # No systemd as PID 1 (a container, a chroot): nothing can have started
  # the services (policy-rc.d kept the packages from it above), but the
  # links would start them on the next boot under systemd.  --root edits
  # the links offline, those of the init scripts too (update-rc.d).
  for service in "${HOST_ONLY_TOOLS[@]}"; do
    if [[ "$(systemctl --root=/ is-enabled "$service.service" 2>/dev/null)" == enabled ]]; then
      echo "bootstrap: disabling $service.service (a tool here, not a service)"
      systemctl --root=/ disable --quiet "$service.service"
    fi
  done
fi

# A .venv made from another interpreter (an earlier bootstrap used the
# first python3 on PATH) is made again from the system one.
if [[ -e .venv/pyvenv.cfg ]] && ! grep -qx "home = $(dirname "$VENV_BASE")" .venv/pyvenv.cfg; then
  echo "bootstrap: .venv was made from another interpreter; making it again from $VENV_BASE"
  if [[ ! -w .venv ]]; then
    echo "bootstrap: .venv belongs to $(stat -c %U .venv); run \`sudo scripts/bootstrap.sh\` once" >&2
    exit 1
  fi
  rm -rf .venv
fi
stamp=".venv/.pyproject-$(sha256sum pyproject.toml | cut -c1-16)"
if [[ ! -e "$stamp" ]]; then
  echo "bootstrap: installing the pinned Python dependencies into .venv"
  [[ -x .venv/bin/python ]] || "$VENV_BASE" -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check --upgrade pip==25.3
  .venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
  rm -f .venv/.pyproject-*
  touch "$stamp"
fi
