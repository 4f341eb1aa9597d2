#!/usr/bin/env bash
# A real SLURM cluster for the tests: munged, slurmctld and slurmd on localhost (one
# node, partition `debug`), all run by hand as root with every file in one folder.
#
#   tests/services/slurm.sh start DIR   -> prints the path of slurm.conf (last line)
#   tests/services/slurm.sh stop DIR
#
# Needs Debian's slurmctld, slurmd, slurm-client and munge (tests/install.sh installs
# them); no systemd. Facts and pitfalls: shared/notes/slurm.md. Snakemake's SLURM
# executor plugin strips SLURM_CONF inside jobs, so `srun` there falls back to
# /run/slurm/conf/slurm.conf: start links /run/slurm/conf to DIR/etc, stop removes the
# link. A machine with /etc/slurm/slurm.conf (a real cluster) is refused, as is a
# /run/slurm/conf that belongs to another running cluster.
#
# Several nodes, each another host (tests/services/host.sh): SLURM_NODES="NAME=ADDRESS
# ..." and SLURM_CTLD_ADDR, the address they reach this machine at (SLURM_CTLD_PORT,
# 6817 by default, keeps it apart from a one-node cluster). Then start runs munged
# and slurmctld only, and makes no link: whoever starts each node's slurmd (`slurmd
# -f CONF -N NAME`, on the node) links /run/slurm/conf there, then `slurm.sh ready DIR`
# waits until every node is idle and a first job ran. Each job's tasks get
# TMPDIR=DIR/scratch (a TaskProlog), which a node should make its own.
set -euo pipefail

usage="usage: slurm.sh start|ready|stop DIR"
cmd=${1:?$usage}
dir=$(realpath -m "${2:?$usage}")
conf=$dir/etc/slurm.conf
link=/run/slurm/conf
nodes=${SLURM_NODES:-}
wait_seconds=30

# Whether a process runs (a zombie does not: pid 1 here may reap them late).
alive() {
    local state
    state=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

# Kill the daemons of the given programs by their pid files in DIR/run (a pid counts
# only if it still runs that program): TERM first, KILL whatever still runs after 5 s.
kill_daemons() {
    local name pid running pids=()
    for name in "$@"; do
        pid=$(cat "$dir/run/$name.pid" 2>/dev/null || true)
        if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" = "$name" ] && alive "$pid"; then
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
        rm -f "$dir/run/$name.pid"
    done
    for _ in $(seq 1 50); do
        running=0
        for pid in ${pids[@]+"${pids[@]}"}; do
            alive "$pid" && running=1
        done
        [ "$running" = 1 ] || return 0
        sleep 0.1
    done
    for pid in ${pids[@]+"${pids[@]}"}; do
        kill -KILL "$pid" 2>/dev/null || true
    done
}

# Job steps (slurmstepd) outlive slurmd. Ours work in DIR (slurmd's log folder) and
# lead the session their job's processes run in: kill those sessions.
kill_steps() {
    local pid sid own
    own=$(ps -o sid= -p $$ | tr -d ' ')
    for pid in $(pgrep -x slurmstepd || true); do
        case "$(readlink "/proc/$pid/cwd" 2>/dev/null || true)" in
        "$dir"/*) ;;
        *) continue ;;
        esac
        sid=$(ps -o sid= -p "$pid" | tr -d ' ')
        if [ -n "$sid" ] && [ "$sid" -gt 1 ] && [ "$sid" != "$own" ]; then
            pkill -KILL -s "$sid" || true
        fi
        kill -KILL "$pid" 2>/dev/null || true
    done
}

stop() {
    if [ -e "$conf" ] && [ -e "$dir/run/slurmctld.pid" ]; then
        # Cancel every job first, so their steps end with them.
        jobs=$(SLURM_CONF=$conf timeout 5 squeue -h -o %A 2>/dev/null || true)
        if [ -n "$jobs" ]; then
            # shellcheck disable=SC2086
            SLURM_CONF=$conf timeout 5 scancel $jobs 2>/dev/null || true
            for _ in $(seq 1 30); do
                [ -z "$(SLURM_CONF=$conf timeout 5 squeue -h -o %A 2>/dev/null || true)" ] && break
                sleep 0.1
            done
        fi
    fi
    kill_daemons slurmd slurmctld
    kill_steps
    kill_daemons munged
    if [ -L "$link" ] && [ "$(readlink "$link")" = "$dir/etc" ]; then
        rm -f "$link"
        rmdir /run/slurm 2>/dev/null || true
    fi
}

fail() {
    echo "slurm.sh: $1; logs in $dir/log:" >&2
    for log in "$dir"/log/*.log; do
        [ -e "$log" ] || continue
        echo "== $log" >&2
        tail -n 20 "$log" >&2
    done
    stop
    exit 1
}

# Wait until every node is idle and a first job has run (or fail).
ready() {
    export SLURM_CONF=$conf
    deadline=$((SECONDS + wait_seconds))
    until [ "$(timeout 5 sinfo -h -o %T 2>/dev/null || true)" = idle ]; do
        for name in slurmctld slurmd; do
            pid=$(cat "$dir/run/$name.pid" 2>/dev/null || true)
            if [ -n "$pid" ] && ! alive "$pid"; then
                fail "$name exited (another SLURM cluster on ports 6817/6818?)"
            fi
        done
        [ "$SECONDS" -lt "$deadline" ] || fail "not every node was idle after ${wait_seconds} s (sinfo: $(timeout 5 sinfo -h -o %T 2>&1 || true))"
        sleep 0.1
    done
    # One job through, and the cluster really runs jobs. It also waits out slurmctld's
    # first scheduling pass, which comes 3 s after it starts whatever batch_sched_delay
    # says (the setting is read in that pass): a job submitted before then waits for it,
    # and `sbatch --wait`, which polls with growing gaps, saw the end of such a job 7 s late.
    warmup=$(timeout 10 sbatch --parsable --chdir "$dir" --job-name slurm.sh-warmup --output /dev/null \
        --wrap true 2>&1) || fail "sbatch failed: $warmup"
    while :; do
        state=$(timeout 5 scontrol show -o job "$warmup" 2>/dev/null | grep -o 'JobState=[A-Z_]*' || true)
        case "${state#JobState=}" in
        COMPLETED) break ;;
        "" | PENDING | CONFIGURING | RUNNING | COMPLETING) ;;
        *) fail "the first job ($warmup) did not complete: $state" ;;
        esac
        [ "$SECONDS" -lt "$deadline" ] || fail "the first job ($warmup) did not complete within ${wait_seconds} s (${state:-no state})"
        sleep 0.1
    done
}

case "$cmd" in
stop)
    stop
    exit 0
    ;;
ready)
    ready
    exit 0
    ;;
start) ;;
*)
    echo "$usage" >&2
    exit 2
    ;;
esac

for tool in munged slurmctld slurmd sinfo timeout; do
    command -v "$tool" >/dev/null || {
        echo "slurm.sh: $tool not found; install with: bash tests/install.sh (apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge)" >&2
        exit 1
    }
done
if [ -e /etc/slurm/slurm.conf ]; then
    echo "slurm.sh: /etc/slurm/slurm.conf exists (a real SLURM cluster?); refusing to start a test cluster beside it" >&2
    exit 1
fi
# A dangling link is a stale one (its cluster's folder is gone): replace it.
if [ -z "$nodes" ] && [ -L "$link" ] && [ -e "$link" ] && [ "$(readlink "$link")" != "$dir/etc" ]; then
    echo "slurm.sh: $link points to $(readlink "$link") (another test cluster running?); stop that one first" >&2
    exit 1
fi
if [ -z "$nodes" ] && [ -e "$link" ] && [ ! -L "$link" ]; then
    echo "slurm.sh: $link exists and is not a link to a test cluster; refusing to replace it" >&2
    exit 1
fi

# Job steps listen on Unix sockets DIR/spool/localhost_<job>.<step>: keep them well
# inside the 108 bytes a socket path may have.
if [ "${#dir}" -gt 70 ]; then
    echo "slurm.sh: $dir is too long for the cluster's sockets (at most 70 characters)" >&2
    exit 1
fi
# A fresh cluster each start: no daemons, jobs or node states from an earlier one.
stop
rm -rf "$dir/state" "$dir/spool"
mkdir -p "$dir"/{etc,run,log,state,spool,munge}
chmod 755 "$dir/munge"
# A fresh key each start (mode 400, owned by the user running munged: root).
rm -f "$dir/munge/munge.key"
head -c 1024 /dev/urandom >"$dir/munge/munge.key"
chmod 400 "$dir/munge/munge.key"
socket=$dir/munge/munge.socket

mem_mb=$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.85 }' /proc/meminfo)
ctld_host=localhost
node_lines="NodeName=localhost CPUs=$(nproc) RealMemory=$mem_mb State=UNKNOWN"
if [ -n "$nodes" ]; then
    ctld_host="localhost(${SLURM_CTLD_ADDR:?SLURM_NODES needs SLURM_CTLD_ADDR})"
    count=$(echo "$nodes" | wc -w)
    node_lines=""
    for node in $nodes; do
        node_lines+="NodeName=${node%%=*} NodeAddr=${node#*=} CPUs=1 RealMemory=$((mem_mb / count)) State=UNKNOWN"$'\n'
        mkdir -p "$dir/spool/${node%%=*}"
    done
    mkdir -p "$dir/scratch"
    printf '#!/bin/sh\necho "export TMPDIR=%s"\n' "$dir/scratch" >"$dir/etc/task_prolog.sh"
    chmod 755 "$dir/etc/task_prolog.sh"
fi
cat >"$conf" <<CONF
# Written by tests/services/slurm.sh: a one-node test cluster, state in $dir.
ClusterName=svctest
SlurmctldHost=$ctld_host
SlurmctldPort=${SLURM_CTLD_PORT:-6817}
${nodes:+TaskProlog=$dir/etc/task_prolog.sh}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool${nodes:+/%n}
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd${nodes:+-%n}.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd${nodes:+-%n}.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
MinJobAge=300
SchedulerParameters=batch_sched_delay=0
$node_lines
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
# Same folder as slurm.conf, where the daemons look for it (Debian's
# /etc/slurm/plugstack.conf would pull in the packages' SPANK plugins).
: >"$dir/etc/plugstack.conf"


# The daemons fork and detach; their own output goes to the log folder, never to
# the caller's pipes. munged wants every folder above its socket open to all (o+x)
# and refuses to start otherwise; pytest's temp folders are 700, and every client
# here is root: --force makes that a warning in its log.
timeout 10 munged --force --key-file="$dir/munge/munge.key" --socket="$socket" \
    --pid-file="$dir/run/munged.pid" --log-file="$dir/log/munged.log" \
    --seed-file="$dir/munge/munge.seed" </dev/null >>"$dir/log/start.log" 2>&1 ||
    fail "munged did not start"

if [ -z "$nodes" ]; then
    mkdir -p /run/slurm
    ln -sfn "$dir/etc" "$link"
fi

export SLURM_CONF=$conf
timeout 10 slurmctld -c -f "$conf" </dev/null >>"$dir/log/start.log" 2>&1 || fail "slurmctld did not start"
if [ -n "$nodes" ]; then
    echo "$conf"
    exit 0
fi
timeout 10 slurmd -c -f "$conf" -N localhost </dev/null >>"$dir/log/start.log" 2>&1 || fail "slurmd did not start"

ready
echo "$conf"
