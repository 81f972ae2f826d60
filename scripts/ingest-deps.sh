#!/usr/bin/env bash
# The Debian packages the ingest tests drive: the real rsyslog (with TLS and RELP) and syslog-ng
# (with its http() destination; not yet: it conflicts with rsyslog as a package). Installed by
# `make system-deps`.
#   scripts/ingest-deps.sh install   install them if missing (as root; ~20 s once)
set -euo pipefail
PACKAGES=(rsyslog rsyslog-gnutls rsyslog-relp)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "ingest-deps: missing ${missing[*]}; install as root: apt-get install ${PACKAGES[*]}" >&2
    exit 1
fi
echo "ingest-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
# policy-rc.d: install the daemons without starting the system-wide services
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
