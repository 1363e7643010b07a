#!/usr/bin/env bash
# Brings up a real single-node Slurm cluster on localhost (Debian/Ubuntu, no systemd needed) so CI
# can sbatch jobs that srun MPI programs. Idempotent: a no-op when the node is already up.
#   scripts/slurm-local.sh        install if missing, configure, start, wait for the node
#   scripts/slurm-local.sh stop   kill the daemons
set -euo pipefail

[ "$(id -u)" -eq 0 ] || exec sudo -E bash "$0" "$@"

conf_dir=/etc/slurm
log_dir=/var/log/slurm
node=$(hostname -s)
ctld_pid=/run/slurmctld.pid
slurmd_pid=/run/slurmd.pid
munge_pid=/run/munge/munged.pid

running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
stop_pid() {
  running "$1" || return 0
  local pid; pid=$(cat "$1"); kill "$pid"
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}
node_state() { sinfo -h -N -n "$node" -o %t 2>/dev/null | head -n1; }
fail() {
  echo "slurm-local: $*" >&2
  for f in "$log_dir"/slurmctld.log "$log_dir"/slurmd.log /var/log/munge/munged.log; do
    [ -f "$f" ] && { echo "--- tail $f" >&2; tail -n 25 "$f" >&2; }
  done
  exit 1
}

if [ "${1:-}" = stop ]; then
  stop_pid "$slurmd_pid"; stop_pid "$ctld_pid"; stop_pid "$munge_pid"
  echo "slurm-local: stopped"; exit 0
fi

# libpmix2: Slurm's mpi/pmix plugin dlopens it at step launch, and Debian's Open MPI 4.1 can only
# be wired up through PMIx (it has no PMI-1/PMI-2 client components).
packages=(slurmd slurmctld slurm-client munge libpmix2)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "slurm-local: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  echo "slurm-local: installed in ${SECONDS}s" >&2
fi

# Slurm counts one CPU per task (CR_CPU). Declaring at least 2 CPUs, with config_overrides so
# slurmd trusts the config rather than draining the node for "low CPU count", lets the usual
# 2-rank tests run on a 1-CPU machine too (just time-sliced); task/none so nothing tries to bind
# tasks to CPUs that may not exist. Memory is not a consumable here; RealMemory (half the RAM)
# only bounds what a job may request with --mem.
cpus=$(nproc); [ "$cpus" -ge 2 ] || cpus=2
mem_mb=$(awk '/MemTotal/ {print int($2 / 2048)}' /proc/meminfo)
# No cgroup plugins anywhere (proctrack/linuxproc, task/none, no jobacct) because containers
# rarely have a writable cgroup hierarchy. MpiDefault=pmix makes a plain `srun prog` wire up
# Open MPI. SlurmUser=root keeps us from needing a slurm user that owns the spool dirs.
conf="ClusterName=local
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$ctld_pid
SlurmdPidFile=$slurmd_pid
SlurmctldLogFile=$log_dir/slurmctld.log
SlurmdLogFile=$log_dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
MpiDefault=pmix
ReturnToService=2
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP"

mkdir -p "$conf_dir" "$log_dir" /var/spool/slurmctld /var/spool/slurmd
if [ "$(cat "$conf_dir/slurm.conf" 2>/dev/null)" != "$conf" ]; then
  printf '%s\n' "$conf" > "$conf_dir/slurm.conf"
  # Daemons read the config only at start, so a changed config means a restart.
  stop_pid "$slurmd_pid"; stop_pid "$ctld_pid"
fi

if running "$ctld_pid" && running "$slurmd_pid" && [[ "$(node_state)" =~ ^(idle|mix|alloc)$ ]]; then
  echo "slurm-local: node $node $(node_state), partition debug, $cpus cpus (already up)"; exit 0
fi

start=$SECONDS
if ! running "$munge_pid"; then
  [ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
  install -d -o munge -g munge -m 0755 /run/munge
  runuser -u munge -- /usr/sbin/munged || fail "munged did not start"
fi
running "$ctld_pid" || slurmctld || fail "slurmctld did not start"
running "$slurmd_pid" || slurmd || fail "slurmd did not start"

for _ in $(seq 60); do
  state=$(node_state || true)
  case "$state" in
    idle|mix|alloc) echo "slurm-local: node $node $state, partition debug, $cpus cpus (up in $((SECONDS - start))s)"; exit 0 ;;
    down*|drain*|drng*|fail*) scontrol update nodename="$node" state=resume 2>/dev/null || true ;;
  esac
  sleep 1
done
fail "node $node not idle after 60 s (state: ${state:-unknown}); sinfo: $(sinfo -N 2>&1 | tail -n +2)"
