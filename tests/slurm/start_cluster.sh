#!/usr/bin/env bash
# Start a private single-node SLURM cluster for tests/test_slurm.py.
#
#   tests/slurm/start_cluster.sh STATE_DIR
#
# Writes STATE_DIR/slurm.conf (+ gres.conf) and keeps the daemons' state, spool, logs and pid files
# in STATE_DIR. Clients find the cluster through SLURM_CONF and through /etc/slurm/slurm.conf, a
# link to STATE_DIR/slurm.conf that stop_cluster.sh removes (the executor starts each job's command
# with an `srun` whose environment has no SLURM_CONF). A machine with its own /etc/slurm/slurm.conf
# (a real SLURM installation) is left alone: the script then says it cannot run here.
#
# The node is this machine under its real hostname, with its CPUs, at least 64 GB of (unenforced)
# memory and two stand-in GPUs (character devices aliasing /dev/null), so that what the slurm
# profile asks for (`sbatch --gpus=1 --mem 16000` for GPU rules) is scheduled as on a real GPU node.
# munged is reused when one answers, otherwise started. Everything started here is listed in
# STATE_DIR/started.pids for tests/slurm/stop_cluster.sh.
#
# Exit status: 0 cluster up (prints SLURM_CONF=...), 3 cannot run here (prints the reason),
# anything else: a start that should have worked failed (the daemons' logs are printed).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
state="${1:?usage: start_cluster.sh STATE_DIR}"
mkdir -p "$state"
state="$(cd "$state" && pwd)"
cannot() { echo "cannot start a SLURM cluster: $*"; exit 3; }

bash "$here/install_slurm.sh" >&2
for command in slurmctld slurmd sbatch squeue scontrol sinfo munged munge unmunge; do
    command -v "$command" >/dev/null || PATH="$PATH:/usr/sbin:/sbin"
    command -v "$command" >/dev/null || cannot "'$command' not found (Debian: apt-get install slurmctld slurmd slurm-client munge)"
done
[ "$(id -u)" = 0 ] || cannot "slurmd must run as root to start jobs as the submitting user"
marker="# Single-node test cluster written by tests/slurm/start_cluster.sh."
system_conf=/etc/slurm/slurm.conf
if [ -e "$system_conf" ] || [ -L "$system_conf" ]; then
    # a link left by an earlier test run that was killed is replaced; anything else is not ours
    if [ -L "$system_conf" ] && { [ ! -e "$system_conf" ] || head -n 1 "$system_conf" | grep -qxF "$marker"; }; then
        rm -f "$system_conf"
    else
        cannot "$system_conf exists (a SLURM installation of this machine); not shadowing it with a test cluster"
    fi
fi

pids="$state/started.pids"
: >"$pids"
fail() {
    echo "SLURM cluster did not start: $*" >&2
    for log in "$state"/*.log; do [ -e "$log" ] && { echo "--- $log" >&2; tail -n 30 "$log" >&2; }; done
    bash "$here/stop_cluster.sh" "$state" >&2 || true
    exit 1
}

# munge: the authentication every SLURM message carries.
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    [ -s /etc/munge/munge.key ] || { mungekey --create --keyfile /etc/munge/munge.key 2>/dev/null \
        || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; }
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
    chmod 0400 /etc/munge/munge.key
    chmod 0755 /run/munge
    rm -f /run/munge/munged.pid
    runuser -u munge -- munged || fail "munged did not start"
    for _ in $(seq 50); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
    echo "munged $(cat /run/munge/munged.pid)" >>"$pids"
    munge -n </dev/null | unmunge >/dev/null || fail "munge credentials do not validate"
fi

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
host="$(hostname -s)"
cpus="$(nproc)"
# Memory is not enforced here (no cgroups), and the slurm profile's per-rule requests are sized for
# GPU nodes: the node advertises at least 64 GB (slurmd reports the configured values, see
# SlurmdParameters below) so that two such jobs run side by side as they would on a real node.
memory_mb="$(free -m | awk '/^Mem:/ { m = int($2 * 0.9); print (m > 65536 ? m : 65536) }')"
ctld_port="$(free_port)"
slurmd_port="$(free_port)"
while [ "$slurmd_port" = "$ctld_port" ]; do slurmd_port="$(free_port)"; done
mkdir -p "$state/state" "$state/spool" "$state/dev"
for gpu in 0 1; do [ -c "$state/dev/gpu$gpu" ] || mknod "$state/dev/gpu$gpu" c 1 3; done

cat >"$state/slurm.conf" <<EOF
$marker
ClusterName=elftest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$state/state
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
# finished jobs stay visible to squeue and scontrol for an hour: without accounting, that is
# where the executor (and the test) read their final states
MinJobAge=3600
ReturnToService=2
SlurmdParameters=config_overrides
GresTypes=gpu
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory_mb Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
cat >"$state/gres.conf" <<EOF
# Two stand-in GPUs: GPU jobs are scheduled (and get CUDA_VISIBLE_DEVICES) on a machine without one.
AutoDetect=off
NodeName=$host Name=gpu File=$state/dev/gpu[0-1]
EOF
export SLURM_CONF="$state/slurm.conf"
mkdir -p "$(dirname "$system_conf")"
ln -s "$SLURM_CONF" "$system_conf"
echo "link $system_conf" >>"$pids"

slurmctld -f "$SLURM_CONF" -i || fail "slurmctld exited"
for _ in $(seq 50); do [ -s "$state/slurmctld.pid" ] && break; sleep 0.1; done
[ -s "$state/slurmctld.pid" ] || fail "slurmctld wrote no pid file"
echo "slurmctld $(cat "$state/slurmctld.pid")" >>"$pids"

slurmd -f "$SLURM_CONF" || fail "slurmd exited"
for _ in $(seq 50); do [ -s "$state/slurmd.pid" ] && break; sleep 0.1; done
[ -s "$state/slurmd.pid" ] || fail "slurmd wrote no pid file"
echo "slurmd $(cat "$state/slurmd.pid")" >>"$pids"

for _ in $(seq 60); do
    node_state="$(sinfo -h -n "$host" -o %T 2>/dev/null || true)"
    case "$node_state" in
        idle*|mixed*|allocated*) echo "SLURM_CONF=$SLURM_CONF"; exit 0 ;;
        down*|drain*) scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
done
fail "node $host did not become idle (state: ${node_state:-none})"
