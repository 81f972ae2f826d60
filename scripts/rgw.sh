#!/usr/bin/env bash
# A single-node Ceph RADOS Gateway (S3) bound to 127.0.0.1, for tests and benchmarks.
#
#   scripts/rgw.sh install   install the Debian packages if missing (ceph-mon, ceph-osd, radosgw, nginx)
#   scripts/rgw.sh start     start mon + osd + radosgw (idempotent); prints the endpoint and credentials
#   scripts/rgw.sh env       print the endpoint and credentials of a running gateway (shell syntax)
#   scripts/rgw.sh status    exit 0 when the gateway answers
#   scripts/rgw.sh stop      stop the daemons started by `start` and delete the data directory
#
# Environment: RGW_DIR (default /tmp/translog-rgw), RGW_PORT (default 17480), RGW_MON_PORT
# (default 16789), RGW_STORE (memstore, the default, or bluestore: a sparse file in RGW_DIR).
# Several clusters can run at once with different RGW_DIR and ports (the tests do that; the
# OSDs take free ports in 17000-17999).
#
# What it takes on one small machine (found by trying; see docs/OBJSTORE.md):
#  * one monitor, one OSD, size-1 pools with 8 placement groups, CRUSH choosing among OSDs
#    (not hosts), so every PG is active+clean with a single OSD;
#  * paxos_propose_interval = 0.01, or each map change waits ~1 s and startup takes ~16 s;
#  * the OSD on memstore (RAM, default) or BlueStore on a sparse file; no block device, no
#    loop device, no LVM;
#  * cephx off: everything binds to 127.0.0.1 and the data dir is private to this machine;
#  * radosgw's beast frontend with tcp_nodelay=1, or every GET waits ~45 ms for Nagle;
#  * clients use path-style addressing (http://127.0.0.1:PORT/bucket/key).
# Output of `start`/`env` is eval-able: RGW_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY.
set -euo pipefail

DIR=${RGW_DIR:-/tmp/translog-rgw}
PORT=${RGW_PORT:-17480}
MON_PORT=${RGW_MON_PORT:-16789}
STORE=${RGW_STORE:-memstore}
ACCESS_KEY=translogtestaccess
SECRET_KEY=translogtestsecretkey0123456789abcdefgh
CONF="$DIR/ceph.conf"
ENDPOINT="http://127.0.0.1:$PORT"
PACKAGES=(ceph-mon ceph-osd radosgw nginx-light curl)

log() { echo "rgw.sh: $*" >&2; }

install_packages() {
    local missing=()
    for cmd in ceph-mon ceph-osd radosgw nginx curl; do
        command -v "$cmd" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin" command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        log "missing ${missing[*]}; install as root: apt-get install ${PACKAGES[*]}"
        return 1
    fi
    log "installing ${PACKAGES[*]} (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
}

print_env() {
    echo "RGW_ENDPOINT=$ENDPOINT"
    echo "AWS_ACCESS_KEY_ID=$ACCESS_KEY"
    echo "AWS_SECRET_ACCESS_KEY=$SECRET_KEY"
    echo "AWS_DEFAULT_REGION=us-east-1"
}

answers() { curl -s -o /dev/null -m 2 "$ENDPOINT/" 2>/dev/null; }

alive() { # alive NAME: the daemon started by us is running
    local pid
    pid=$(cat "$DIR/$1.pid" 2>/dev/null) || return 1
    kill -0 "$pid" 2>/dev/null
}

write_conf() {
    local fsid=$1
    cat >"$CONF" <<EOF
[global]
fsid = $fsid
mon initial members = a
mon host = v1:127.0.0.1:$MON_PORT
public network = 127.0.0.0/8
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = true
ms bind ipv4 = true
ms bind ipv6 = false
ms bind msgr2 = false
ms bind port min = 17000
ms bind port max = 17999
run dir = $DIR/run
admin socket = $DIR/run/\$name.asok
log file = $DIR/log/\$name.log
pid file = $DIR/\$name.pid
crash dir = $DIR/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
paxos propose interval = 0.01
mon osd full ratio = 0.99
mon osd nearfull ratio = 0.98
mon osd backfillfull ratio = 0.985
osd memory target = 1073741824
# The OSD would add itself to the CRUSH map at start, with a command that sometimes races the
# monitor map (the monitor answers 'wrong fsid' and the OSD never boots): do it here instead.
osd crush update on start = false
osd class update on start = false
debug ms = 0

[mon]
mon data = $DIR/mon/\$cluster-\$id

[osd]
osd data = $DIR/osd/$fsid-\$id
osd objectstore = $STORE
memstore device bytes = 4294967296
bluestore block path = $DIR/osd/block
bluestore block create = true
bluestore block size = 21474836480
bluestore cache size = 268435456
osd max object name len = 256
osd max object namespace len = 64

[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:$PORT tcp_nodelay=1
rgw data = $DIR/rgw
rgw dns name = 127.0.0.1
rgw thread pool size = 64
rgw enable usage log = false
rgw enable ops log = false
rgw cache enabled = true
EOF
}

start() {
    install_packages
    if ! start_once; then
        log "first attempt failed; starting afresh"
        stop_daemons
        rm -rf "$DIR"
        start_once
    fi
}

start_once() {
    export PATH="$PATH:/usr/sbin"
    if [ -f "$DIR/setup-done" ] && alive client.rgw && answers; then
        print_env
        return 0
    fi
    if [ -d "$DIR" ] && { [ ! -f "$DIR/setup-done" ] || ! alive mon.a || ! alive osd.0; }; then
        # A half-done setup, or daemons gone (memstore lost its data): start afresh.
        stop_daemons
        rm -rf "$DIR"
    fi
    local t0=$SECONDS
    mkdir -p "$DIR"/{run,log,crash,mon,osd,rgw}
    chmod 700 "$DIR"
    if [ ! -f "$DIR/setup-done" ]; then
        local fsid
        fsid=$(cat /proc/sys/kernel/random/uuid)
        write_conf "$fsid"
        ceph-authtool --create-keyring "$DIR/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
        monmaptool --create --fsid "$fsid" --addv a "[v1:127.0.0.1:$MON_PORT]" "$DIR/monmap" >/dev/null
        ceph-mon -c "$CONF" --mkfs -i a --monmap "$DIR/monmap" --keyring "$DIR/mon.keyring" >/dev/null
    fi
    alive mon.a || ceph-mon -c "$CONF" -i a
    if [ ! -f "$DIR/setup-done" ]; then
        local osd_uuid
        osd_uuid=$(cat /proc/sys/kernel/random/uuid)
        ceph -c "$CONF" osd new "$osd_uuid" >/dev/null
        mkdir -p "$DIR/osd/$fsid-0"
        ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$osd_uuid" >"$DIR/log/osd-mkfs.out" 2>&1
        ceph -c "$CONF" osd crush add-bucket localhost host >/dev/null 2>&1
        ceph -c "$CONF" osd crush move localhost root=default >/dev/null 2>&1
        ceph -c "$CONF" osd crush add osd.0 1.0 host=localhost root=default >/dev/null 2>&1
    fi
    alive osd.0 || ceph-osd -c "$CONF" -i 0 2>>"$DIR/log/osd-start.out"
    # The OSD must be up before the gateway can create its pools; fail fast (and start afresh)
    # rather than let radosgw wait forever for a stuck OSD.
    local deadline=$((SECONDS + 20))
    until ceph -c "$CONF" osd stat 2>/dev/null | grep -q ' 1 up'; do
        if [ $SECONDS -ge $deadline ]; then
            log "the OSD did not come up within 20 s; logs kept in $DIR.failed"
            rm -rf "$DIR.failed" && cp -r "$DIR/log" "$DIR.failed" || true
            return 1
        fi
        sleep 0.2
    done
    alive client.rgw || radosgw -c "$CONF" -n client.rgw
    deadline=$((SECONDS + 60))
    until answers; do
        if [ $SECONDS -ge $deadline ]; then
            log "the gateway did not answer within 60 s; logs in $DIR/log"
            tail -n 20 "$DIR"/log/*.log >&2 || true
            return 1
        fi
        sleep 0.2
    done
    if [ ! -f "$DIR/setup-done" ]; then
        # Users live in RADOS, so this waits for the OSD to be up and the rgw pools to exist.
        until radosgw-admin -c "$CONF" -n client.rgw user create --uid translog \
            --display-name translog --access-key "$ACCESS_KEY" --secret "$SECRET_KEY" \
            >"$DIR/log/user-create.out" 2>&1; do
            if [ $SECONDS -ge $deadline ]; then
                log "couldn't create the S3 user; see $DIR/log/user-create.out"
                return 1
            fi
            sleep 0.3
        done
        touch "$DIR/setup-done"
    fi
    log "up in $((SECONDS - t0)) s ($STORE), data in $DIR"
    print_env
}

stop_daemons() {
    # The data directory is deleted right after, so nothing needs a clean shutdown: SIGKILL
    # the daemons this script started (by their pid files) and wait until they are gone.
    local name pid
    for name in client.rgw osd.0 mon.a; do
        pid=$(cat "$DIR/$name.pid" 2>/dev/null) || continue
        kill -9 "$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        rm -f "$DIR/$name.pid"
    done
}

case "${1:-}" in
install) install_packages ;;
start) start ;;
env) print_env ;;
status) answers ;;
stop)
    stop_daemons
    rm -rf "$DIR"
    ;;
*)
    echo "usage: $0 install|start|env|status|stop" >&2
    exit 2
    ;;
esac
