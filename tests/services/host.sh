#!/usr/bin/env bash
# A second host on this machine for the tests: a network namespace joined to this one
# by a veth pair (10.211.N.1 here, 10.211.N.2 there), with its own hostname (a UTS
# namespace) and its own mounts, in which /tmp is a fresh tmpfs and every folder
# given to hide (the project's checkout, the driver's temp folder) is an empty
# read-only tmpfs: hidden, not just unused. sshd runs there, on port 22 of its own
# address, with a host key and a client key made for this host. The Python
# installation is the machine's, so the host has the same interpreter and packages.
#
#   tests/services/host.sh start DIR NAME N [HIDE...]  -> prints "ADDRESS KEY" (last line)
#   tests/services/host.sh stop DIR NAME
#
# NAME: the host's name (its hostname, and the namespace's: svc-NAME); N: 1-250, the
# third byte of its subnet; its default route goes to this machine. Two variables
# make a cluster node instead (a shared filesystem, its own scratch):
#   HOST_TMP=shared       keep this machine's /tmp (else a fresh tmpfs)
#   HOST_PRIVATE="D..."   an empty writable tmpfs over each folder D, the host's own
# Stop kills every process in the namespace and deletes it
# (the veth pair goes with it, the mounts with their last process). Needs iproute2,
# util-linux's unshare and Debian's openssh-server (tests/install.sh); run as root.
set -euo pipefail

usage="usage: host.sh start DIR NAME N [HIDE...] | stop DIR NAME"
cmd=${1:?$usage}
dir=$(realpath -m "${2:?$usage}")
name=${3:?$usage}
ns=svc-$name
wait_seconds=20

stop() {
    local pids
    if ip netns list | grep -qw -- "$ns"; then
        pids=$(ip netns pids "$ns" || true)
        if [ -n "$pids" ]; then
            # shellcheck disable=SC2086
            kill -TERM $pids 2>/dev/null || true
            for _ in $(seq 1 50); do
                [ -z "$(ip netns pids "$ns" || true)" ] && break
                sleep 0.1
            done
            pids=$(ip netns pids "$ns" || true)
            # shellcheck disable=SC2086
            [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
        fi
        ip netns del "$ns"
    fi
    # The kernel frees a namespace, and the veth pair in it, a little after its last
    # process ends: wait for that (the other end is named in DIR/veth), or delete it.
    if [ -s "$dir/veth" ]; then
        for _ in $(seq 1 50); do
            ip link show "$(cat "$dir/veth")" >/dev/null 2>&1 || break
            sleep 0.1
        done
        ip link del "$(cat "$dir/veth")" 2>/dev/null || true
        rm -f "$dir/veth"
    fi
}

case $cmd in
stop)
    stop
    exit 0
    ;;
start) ;;
*)
    echo "$usage" >&2
    exit 2
    ;;
esac

n=${4:?$usage}
shift 4
if ! [[ $n =~ ^[0-9]+$ ]] || [ "$n" -lt 1 ] || [ "$n" -gt 250 ]; then
    echo "host.sh: N must be 1-250, not '$n'" >&2
    exit 2
fi
if ip netns list | grep -qw -- "$ns"; then
    echo "host.sh: a namespace $ns exists already (another test's host?): stop it first" >&2
    exit 1
fi
for prog in ip unshare /usr/sbin/sshd ssh-keygen; do
    command -v "$prog" >/dev/null || { echo "host.sh: $prog is missing: run bash tests/install.sh" >&2; exit 1; }
done
here=10.211.$n.1
there=10.211.$n.2
veth=svh$n

mkdir -p "$dir"
chmod 700 "$dir"
rm -f "$dir/id" "$dir/id.pub" "$dir/host_key" "$dir/host_key.pub"
ssh-keygen -q -t ed25519 -N '' -C "svc-test@$name" -f "$dir/id"
ssh-keygen -q -t ed25519 -N '' -C "$name" -f "$dir/host_key"
cp "$dir/id.pub" "$dir/authorized_keys"
cat >"$dir/sshd_config" <<EOF
ListenAddress $there
Port 22
HostKey /mnt/svc-host/host_key
AuthorizedKeysFile /mnt/svc-host/authorized_keys
PidFile /mnt/svc-host/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
Subsystem sftp internal-sftp
LogLevel ERROR
EOF
# Run inside the namespaces: copy what sshd needs out of DIR (which /tmp's tmpfs may
# hide), hide the folders, then become sshd.
cat >"$dir/launch.sh" <<EOF
set -euo pipefail
mount --make-rprivate /
mkdir -p /mnt/svc-host /run/sshd
mount -t tmpfs -o mode=700 svc-host /mnt/svc-host
cp "$dir/sshd_config" "$dir/host_key" "$dir/authorized_keys" /mnt/svc-host/
for hide in "\$@"; do
    mount -t tmpfs -o ro,mode=755 svc-hidden "\$hide"
done
for own in ${HOST_PRIVATE:-}; do
    mount -t tmpfs -o mode=755 svc-private "\$own"
done
if [ "${HOST_TMP:-own}" != shared ]; then
    mount -t tmpfs -o mode=1777 svc-tmp /tmp
fi
hostname "$name"
exec /usr/sbin/sshd -D -e -f /mnt/svc-host/sshd_config
EOF

trap 'stop' ERR
ip netns add "$ns"
ip link add "${veth}a" type veth peer name "${veth}b"
echo "${veth}a" >"$dir/veth"
ip link set "${veth}b" netns "$ns"
ip addr add "$here/30" dev "${veth}a"
ip link set "${veth}a" up
ip -n "$ns" addr add "$there/30" dev "${veth}b"
ip -n "$ns" link set "${veth}b" up
ip -n "$ns" link set lo up
ip -n "$ns" route add default via "$here"
for hide in "$@" ${HOST_PRIVATE:-}; do
    [ -d "$hide" ] || { echo "host.sh: cannot hide $hide: not a folder" >&2; false; }
done
# nsenter rather than `ip netns exec`, which mounts a sysfs of its own over /sys and
# so hides /sys/fs/cgroup (slurmd needs it).
setsid nsenter --net="/run/netns/$ns" unshare --mount --uts --propagation private \
    bash "$dir/launch.sh" "$@" </dev/null >"$dir/sshd.log" 2>&1 &

for _ in $(seq 1 $((wait_seconds * 10))); do
    if ssh -i "$dir/id" -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o ConnectTimeout=1 -o LogLevel=ERROR "root@$there" true 2>/dev/null; then
        echo "$there $dir/id"
        exit 0
    fi
    sleep 0.1
done
echo "host.sh: sshd on $there did not answer within $wait_seconds s; its log: $(tail -5 "$dir/sshd.log" 2>/dev/null)" >&2
stop
exit 1
