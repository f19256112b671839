#!/usr/bin/env bash
# Install a single-node SLURM (Debian packages slurmctld slurmd slurm-client munge) when its commands
# are missing and this is root on a system with apt-get; otherwise do nothing and say why.
# Used by `make test` (target slurm-deps) and by tests/slurm/start_cluster.sh. Exits 0 unless
# apt-get itself fails.
set -euo pipefail

PACKAGES=(slurmctld slurmd slurm-client munge)
COMMANDS=(slurmctld slurmd sbatch squeue scontrol sinfo munged munge unmunge)
PATH="$PATH:/usr/sbin:/sbin"

missing=()
for command in "${COMMANDS[@]}"; do
    command -v "$command" >/dev/null || missing+=("$command")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "note: SLURM commands missing (${missing[*]}) and not installable here (not root or no apt-get: apt-get install ${PACKAGES[*]}); tests/test_slurm.py is skipped"
    exit 0
fi
echo "installing SLURM for tests/test_slurm.py (apt-get install ${PACKAGES[*]})"
export DEBIAN_FRONTEND=noninteractive
# The package scripts must not start the daemons with a system config: the tests start their own.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
fi
trap '[ "$created_policy" = 1 ] && rm -f "$policy"' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
