#!/usr/bin/env bash
# The Debian packages the ingest tests drive: the real rsyslog (with TLS and RELP) and syslog-ng
# (with its http() destination). Installed by `make system-deps`.
#   scripts/ingest-deps.sh install   install them if missing (as root; ~30 s once)
#
# syslog-ng-core conflicts with rsyslog as a Debian package (both provide system-log-daemon), so
# it is not installed with dpkg: its libraries are (apt-get; they conflict with nothing), and the
# two syslog-ng packages are unpacked with `dpkg-deb -x` into $SYSLOG_NG_PREFIX. The tests run
# $SYSLOG_NG_PREFIX/bin/syslog-ng (a wrapper: library path, --module-path) -F with their own
# config, persist, pid and control files; no system service is involved.
set -euo pipefail
PACKAGES=(rsyslog rsyslog-gnutls rsyslog-relp)
SYSLOG_NG_PREFIX=${SYSLOG_NG_PREFIX:-/opt/translog-syslog-ng}
SYSLOG_NG_DEBS=(syslog-ng-core syslog-ng-mod-http)
# The libraries syslog-ng-core and syslog-ng-mod-http link against (their Depends, bookworm).
SYSLOG_NG_LIBS=(libcap2 libglib2.0-0 libivykis0 libjson-c5 libnet1 libpcre3 libssl3 libsystemd0
    libwrap0 libcurl4)

missing=()
for p in "${PACKAGES[@]}" "${SYSLOG_NG_LIBS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
need_syslog_ng=0
[ -x "$SYSLOG_NG_PREFIX/bin/syslog-ng" ] &&
    [ -e "$SYSLOG_NG_PREFIX/usr/lib/syslog-ng/3.38/libhttp.so" ] || need_syslog_ng=1
if [ ${#missing[@]} -eq 0 ] && [ $need_syslog_ng = 0 ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "ingest-deps: missing ${missing[*]:-} ${need_syslog_ng/1/syslog-ng in $SYSLOG_NG_PREFIX};" \
        "run as root: scripts/ingest-deps.sh install" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
if [ ${#missing[@]} -gt 0 ]; then
    echo "ingest-deps: installing ${missing[*]}" >&2
    # policy-rc.d: install the daemons without starting the system-wide services
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" "${SYSLOG_NG_LIBS[@]}" >/dev/null
fi
if [ $need_syslog_ng = 1 ]; then
    echo "ingest-deps: unpacking ${SYSLOG_NG_DEBS[*]} into $SYSLOG_NG_PREFIX" >&2
    work=$(mktemp -d) && chmod 755 "$work" && chown _apt "$work" 2>/dev/null || true
    (cd "$work" && apt-get download -qq "${SYSLOG_NG_DEBS[@]}" >/dev/null)
    rm -rf "$SYSLOG_NG_PREFIX.tmp" && mkdir -p "$SYSLOG_NG_PREFIX.tmp"
    for deb in "$work"/*.deb; do
        dpkg-deb -x "$deb" "$SYSLOG_NG_PREFIX.tmp"
    done
    # The binary finds libsyslog-ng through /usr/lib/syslog-ng; bin/syslog-ng points it here.
    mkdir -p "$SYSLOG_NG_PREFIX.tmp/bin"
    cat > "$SYSLOG_NG_PREFIX.tmp/bin/syslog-ng" <<WRAP
#!/bin/sh
export LD_LIBRARY_PATH="$SYSLOG_NG_PREFIX/usr/lib/syslog-ng\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
exec "$SYSLOG_NG_PREFIX/usr/sbin/syslog-ng" --module-path "$SYSLOG_NG_PREFIX/usr/lib/syslog-ng/3.38" "\$@"
WRAP
    chmod 755 "$SYSLOG_NG_PREFIX.tmp/bin/syslog-ng"
    rm -rf "$work" "$SYSLOG_NG_PREFIX" && mv "$SYSLOG_NG_PREFIX.tmp" "$SYSLOG_NG_PREFIX"
    "$SYSLOG_NG_PREFIX/bin/syslog-ng" --version >/dev/null
fi
