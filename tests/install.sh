#!/usr/bin/env bash
# Everything the test suite needs on a fresh Debian machine (run as root): Ceph's
# RADOS Gateway, monitor and OSD for the real-S3 tests (tests/services/ceph.sh
# starts them), SLURM's controller, node daemon and client commands with munge for
# the SLURM tests (tests/services/slurm.sh starts them; no systemd needed), samtools
# and iVar for the low-frequency benchmark (bench/bench_lowfreq.py; iVar reads
# `samtools mpileup`, which its package only recommends), minimap2 for the alignment
# benchmark (bench/bench_align.py), Chromium to render the run report headless
# (tests/test_report.py), bcftools, freebayes and GNU parallel for the benchmark harness
# (bench/harness.py; GNU time for its peak-memory figures), openssh-server and iproute2
# for the second host in a network namespace (tests/services/host.sh), and this project
# with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v radosgw >/dev/null || ! command -v ceph-osd >/dev/null || ! command -v curl >/dev/null \
    || ! command -v samtools >/dev/null || ! command -v ivar >/dev/null || ! command -v minimap2 >/dev/null \
    || ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
    || ! command -v munged >/dev/null || ! command -v chromium >/dev/null || ! command -v bcftools >/dev/null \
    || ! command -v freebayes >/dev/null || ! command -v parallel >/dev/null || [ ! -x /usr/bin/time ] \
    || [ ! -x /usr/sbin/sshd ] || ! command -v ip >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        radosgw ceph-mon ceph-osd curl samtools ivar minimap2 slurmctld slurmd slurm-client munge \
        chromium bcftools freebayes parallel time openssh-server iproute2 >/dev/null
fi
pip install -q -e '.[test]'
