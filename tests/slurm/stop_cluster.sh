#!/usr/bin/env bash
# Stop the daemons tests/slurm/start_cluster.sh started (listed in STATE_DIR/started.pids), by pid,
# and only while that pid still runs the program it was recorded for; remove its config link.
#
#   tests/slurm/stop_cluster.sh STATE_DIR
set -uo pipefail

state="${1:?usage: stop_cluster.sh STATE_DIR}"
pids="$state/started.pids"
[ -e "$pids" ] || exit 0

ours() { [ "$(ps -o comm= -p "$2" 2>/dev/null)" = "$1" ]; }

# slurmd first, munged last: the others need it to shut down cleanly.
for name in slurmd slurmctld munged; do
    while read -r recorded pid; do
        [ "$recorded" = "$name" ] && ours "$name" "$pid" || continue
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 100); do ours "$name" "$pid" || break; sleep 0.1; done
        ours "$name" "$pid" && kill -KILL "$pid" 2>/dev/null
    done <"$pids"
done
# the /etc/slurm/slurm.conf link, while it still points into this STATE_DIR
while read -r recorded path; do
    [ "$recorded" = link ] && [ "$(readlink "$path")" = "$state/slurm.conf" ] && rm -f "$path"
done <"$pids"
: >"$pids"
