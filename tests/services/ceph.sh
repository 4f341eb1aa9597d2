#!/usr/bin/env bash
# A real S3 server for the tests: a single-node Ceph cluster (one monitor, one
# in-memory OSD) with a RADOS Gateway on 127.0.0.1, all state in one folder.
#
#   tests/services/ceph.sh start DIR [PORT]   -> prints "endpoint access_key secret_key"
#   tests/services/ceph.sh stop DIR
#
# Needs Debian's radosgw, ceph-mon and ceph-osd (.ci/run installs them). Facts and
# pitfalls: shared/notes/toolchain-facts.md (auth none needs `ms mon client mode =
# crc secure` on the gateway, or it hangs for 300 s).
set -euo pipefail

cmd=${1:?usage: ceph.sh start|stop DIR [PORT]}
dir=$(realpath -m "${2:?usage: ceph.sh start|stop DIR [PORT]}")
port=${3:-7480}
access_key=svc-test-access
secret_key=svc-test-secret-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')

stop() {
    for pidfile in "$dir"/run/*.pid; do
        [ -e "$pidfile" ] || continue
        kill "$(cat "$pidfile")" 2>/dev/null || true
    done
    sleep 0.5
    for pidfile in "$dir"/run/*.pid; do
        [ -e "$pidfile" ] || continue
        kill -9 "$(cat "$pidfile")" 2>/dev/null || true
        rm -f "$pidfile"
    done
}

case "$cmd" in
stop)
    stop
    exit 0
    ;;
start) ;;
*)
    echo "usage: ceph.sh start|stop DIR [PORT]" >&2
    exit 2
    ;;
esac

for tool in monmaptool ceph-mon ceph-osd radosgw radosgw-admin ceph; do
    command -v "$tool" >/dev/null || {
        echo "ceph.sh: $tool not found; install with: apt-get install -y --no-install-recommends radosgw ceph-mon ceph-osd" >&2
        exit 1
    }
done

mkdir -p "$dir"/{mon,osd,run,log}
conf=$dir/ceph.conf
fsid=$(cat /proc/sys/kernel/random/uuid)
cat >"$conf" <<CONF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:3300,v1:127.0.0.1:6789]
auth cluster required = none
auth service required = none
auth client required = none
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
osd crush chooseleaf type = 0
ms bind ipv6 = false
public network = 127.0.0.0/8
run dir = $dir/run
log file = $dir/log/\$name.log
admin socket = $dir/run/\$name.asok
pid file = $dir/run/\$name.pid
mon data = $dir/mon/\$cluster-\$id
osd data = $dir/osd/\$cluster-\$id
keyring = /dev/null
mon warn on pool no redundancy = false

[osd.0]
osd objectstore = memstore
memstore device bytes = 4294967296
osd max object name len = 256
osd max object namespace len = 64

[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$port
ms mon client mode = crc secure
rgw data = $dir/rgw
CONF

monmaptool --create --addv a "[v2:127.0.0.1:3300,v1:127.0.0.1:6789]" --fsid "$fsid" "$dir/monmap" >/dev/null
ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" >/dev/null
ceph-mon -c "$conf" -i a
osd_uuid=$(cat /proc/sys/kernel/random/uuid)
mkdir -p "$dir/osd/ceph-0" "$dir/rgw"
timeout 60 ceph -c "$conf" osd new "$osd_uuid" >/dev/null
ceph-osd -c "$conf" -i 0 --mkfs --osd-uuid "$osd_uuid" >/dev/null 2>&1
ceph-osd -c "$conf" -i 0 2>>"$dir/log/osd-start.log"
radosgw -c "$conf" -n client.rgw.a

for _ in $(seq 1 120); do
    if curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port" 2>/dev/null | grep -q 200; then
        break
    fi
    sleep 0.5
done
curl -s -o /dev/null "http://127.0.0.1:$port" || {
    echo "ceph.sh: the gateway did not answer on 127.0.0.1:$port; see $dir/log" >&2
    stop
    exit 1
}
timeout 60 radosgw-admin -c "$conf" user create --uid=svc --display-name="svc tests" \
    --access-key="$access_key" --secret="$secret_key" >/dev/null
echo "http://127.0.0.1:$port $access_key $secret_key"
