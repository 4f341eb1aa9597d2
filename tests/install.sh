#!/usr/bin/env bash
# Everything the test suite needs on a fresh Debian machine (run as root): Ceph's
# RADOS Gateway, monitor and OSD for the real-S3 tests (tests/services/ceph.sh
# starts them), and this project with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v radosgw >/dev/null || ! command -v ceph-osd >/dev/null || ! command -v curl >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        radosgw ceph-mon ceph-osd curl >/dev/null
fi
pip install -q -e '.[test]'
