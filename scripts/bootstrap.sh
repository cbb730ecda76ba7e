#!/usr/bin/env bash
# Install everything the package needs on a Debian 12 machine, as root:
# the apt packages (Podman for the lab, NGINX/HAProxy/wrk for the benchmark)
# and the pinned Python dependencies in .venv. Safe to run again: it only
# does work when something is missing or pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  podman runc debootstrap            # the lab: containers built offline
  openssh-client openssl curl        # Ansible's transport, certificate checks
  python3-venv                       # .venv on a Python without ensurepip
  nginx haproxy wrk nghttp2-client   # the benchmark runs them on loopback
  prometheus                         # promtool checks generated Prometheus configs
  mtail                              # tests/roles compiles the rendered mtail program
  keepalived                         # `keepalived -t` checks roles/edge_vip's configuration (tests/vip)
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
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

stamp=".venv/.pyproject-$(sha256sum pyproject.toml | cut -c1-16)"
if [[ ! -e "$stamp" ]]; then
  echo "bootstrap: installing the pinned Python dependencies into .venv"
  [[ -x .venv/bin/python ]] || python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check --upgrade pip==25.3
  .venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
  rm -f .venv/.pyproject-*
  touch "$stamp"
fi
