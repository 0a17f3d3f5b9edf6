#!/usr/bin/env bash
# Install Debian's SLURM packages for tests/workflow/test_slurm.py (a single-node cluster the tests start
# themselves from tests/helpers/slurm_cluster.py: their own munged, slurmctld and slurmd under a temp dir).
# Needs root on Debian/Ubuntu; exits 1 saying why when it cannot. Nothing is started or enabled here.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "slurm-setup: needs root (apt-get; slurmd launches the test jobs as root)" >&2
    exit 1
fi
if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
    && command -v sbatch >/dev/null && command -v munged >/dev/null; then
    echo "slurm-setup: SLURM already installed: $(dpkg-query -W -f '${Version}' slurm-client 2>/dev/null || echo unknown version)"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq slurmctld slurmd slurm-client munge
# the tests run their own daemons; keep the packaged services (if an init system started them) out of the way
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl disable --now slurmctld slurmd >/dev/null 2>&1 || true
fi
echo "slurm-setup: installed $(dpkg-query -W -f '${Version}' slurm-client 2>/dev/null || echo unknown version)"
