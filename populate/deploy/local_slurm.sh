#!/usr/bin/env bash
# A private one-node SLURM cluster for this checkout: munged, slurmctld and slurmd on loopback ports,
# their keys, configuration, state, logs and pid files in the ignored folder .local/slurm/.
#
#   eval "$(populate/deploy/local_slurm.sh start)"   # start (or reuse); prints `export SLURM_CONF=...`
#   populate/deploy/local_slurm.sh status             # the daemons' pids, then `sinfo`
#   populate/deploy/local_slurm.sh stop               # cancel its jobs, end exactly its daemons, by pid
#
# Debian's slurm-wlm and munge are installed with apt-get when their programs are missing.  Nothing
# outside .local/slurm/ is written: not /etc/slurm, /etc/munge or /run/munge.  The clients (sbatch,
# squeue, scancel, sinfo, scontrol) find this cluster through SLURM_CONF, and the configuration's
# AuthInfo=socket=... points SLURM's munge plugin at this cluster's munged.  Messages go to stderr, so
# that only the exports reach stdout.
#
# Choices for a one-machine cluster (see slurm.conf(5)):
#   ProctrackType=proctrack/linuxproc, TaskPlugin=task/none: no cgroups needed.
#   SelectType=select/cons_tres with CR_Core_Memory, one node with this machine's CPUs and memory, and
#   OverSubscribe=FORCE:4 on the partition: up to four jobs share a core, so that a four-task array of
#   one-CPU workers runs at once on a two-core machine.
#   KillWait=15: the grace between SIGTERM and SIGKILL at scancel and at a time limit.  Workers stop
#   within --stop-timeout (20 s in slurm_worker.sbatch): submit with WORKER_STOP_TIMEOUT below 15 here.
#
# Ports: slurmctld on a free port from 16817 upwards, slurmd on the next; chosen at the first start
# and kept in .local/slurm/ports while they are free, so that checkouts on one machine run side by side.
# `start` while this checkout's cluster runs prints the exports again and starts nothing; a fresh
# start begins with an empty queue (slurmctld -c), so that jobs of a cluster not stopped cleanly never run.  Run as root
# (slurmd launches jobs as their user); CI and the test machine run as root.
# `stop` ends only processes whose pid file is in .local/slurm/ and whose command line names it.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd -P)
dir="$root/.local/slurm"
conf="$dir/slurm.conf"
say() { echo "local_slurm: $*" >&2; }
die() { say "$*"; exit 1; }

DAEMONS=(munged slurmctld slurmd)  # started in this order, stopped in the reverse

install_if_missing() {
  local missing=()
  command -v munged >/dev/null 2>&1 || missing+=(munge)
  command -v slurmctld >/dev/null 2>&1 || missing+=(slurm-wlm)
  [[ ${#missing[@]} -eq 0 ]] && return
  say "installing Debian packages ${missing[*]}"
  local sudo=; [[ $(id -u) -eq 0 ]] || sudo=sudo
  $sudo apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
}
export PATH=$PATH:/usr/sbin  # the daemons' folder, missing from some users' PATH

# --- whose process is it ------------------------------------------------------------------------

ours() {  # name: print the pid when .local/slurm/<name>.pid names a live process whose command line names $dir
  local pid
  [[ -r $dir/$1.pid ]] || return 1
  pid=$(head -1 "$dir/$1.pid" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir/" || return 1
  echo "$pid"
}

running() { local name; for name in "${DAEMONS[@]}"; do ours "$name" >/dev/null || return 1; done; }

# --- configuration ------------------------------------------------------------------------------

port_free() {  # port: nothing listens on 127.0.0.1:port
  python3 -c 'import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1])))' \
    "$1" 2>/dev/null
}

choose_ports() {  # print "ctld_port slurmd_port": the recorded pair while free, else the first free pair
  local port
  if [[ -s $dir/ports ]]; then
    read -r port _ < "$dir/ports"
    if port_free "$port" && port_free $((port + 1)); then cat "$dir/ports"; return; fi
  fi
  for port in $(seq 16817 2 17815); do
    if port_free "$port" && port_free $((port + 1)); then echo "$port $((port + 1))"; return; fi
  done
  die "no two free ports in 16817-17816 for this checkout's SLURM cluster"
}

write_config() {  # ctld_port slurmd_port
  local node hardware
  node=$(hostname -s)
  # This machine's CPUs (as sockets, cores and threads) and memory, as slurmd itself detects them:
  # "NodeName=... CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105"
  hardware=$(slurmd -C | head -1 | cut -d' ' -f2-)
  [[ $hardware == CPUs=* ]] || die "slurmd -C did not describe this machine: $hardware"
  mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$dir/munge"
  chmod 711 "$dir/munge"  # the key stays 600; munged wants its socket folder searchable
  if [[ ! -s $dir/munge/munge.key ]]; then
    ( umask 077; head -c 1024 /dev/urandom > "$dir/munge/munge.key" )
  fi
  cat > "$conf" <<EOF
# Written by populate/deploy/local_slurm.sh for this checkout; rewritten at each start.
ClusterName=pipeline-local
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$1
SlurmdPort=$2
SlurmUser=$(id -un)
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
KillWait=15
MinJobAge=300
InactiveLimit=0
SchedulerType=sched/builtin
NodeName=$node NodeAddr=127.0.0.1 $hardware State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE OverSubscribe=FORCE:4 State=UP
EOF
  echo "$1 $2" > "$dir/ports"
}

# --- start, status, stop ------------------------------------------------------------------------

exports() { echo "export SLURM_CONF=$conf"; }

wait_for() {  # seconds what command...: run command until it succeeds
  local seconds=$1 what=$2; shift 2
  for _ in $(seq $((seconds * 4))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  die "$what within $seconds s; see $dir/log/"
}

node_idle() {  # idle, and registered with the CPUs of the configuration
  [[ $(sinfo -h -o '%t %c' 2>/dev/null) == "idle $(grep -o ' CPUs=[0-9]*' "$conf" | cut -d= -f2)" ]]
}

start() {
  if running; then
    say "this checkout's SLURM cluster is already running (munged $(ours munged), slurmctld $(ours slurmctld)," \
      "slurmd $(ours slurmd)); nothing started"
    exports; return
  fi
  local name
  for name in "${DAEMONS[@]}"; do
    if ours "$name" >/dev/null; then die "$name of this checkout runs without the others; 'local_slurm.sh stop' first"; fi
  done
  install_if_missing
  local ports socket="$dir/munge/munge.socket"
  (( ${#socket} < 100 )) || die "the munge socket path $socket is too long for a unix socket; use a shorter checkout path"
  ports=$(choose_ports)
  write_config $ports
  export SLURM_CONF=$conf
  say "starting munged (socket $socket)"
  # -f: munged refuses root's own key folder checks otherwise; it forks and writes its pid file.
  munged -f --key-file="$dir/munge/munge.key" --socket="$socket" --seed-file="$dir/munge/munged.seed" \
    --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" >&2
  wait_for 10 "munged did not answer" test -S "$socket"
  say "starting slurmctld on 127.0.0.1:${ports% *} and slurmd on port ${ports#* } (configuration $conf)"
  # -c: start with no jobs, so that a cluster that was not stopped cleanly runs no stale ones
  slurmctld -c -f "$conf" >&2
  wait_for 30 "slurmctld did not answer" scontrol ping
  slurmd -f "$conf" >&2
  wait_for 60 "the node did not become idle" node_idle
  running || die "a daemon exited after starting; see $dir/log/"
  say "cluster up: $(sinfo -h -o '%P %D node(s) %t %c CPUs %m MiB')"
  exports
}

status() {
  local name pid
  for name in "${DAEMONS[@]}"; do
    if pid=$(ours "$name"); then say "$name: pid $pid"; else say "$name: not running"; fi
  done
  running || exit 3
  SLURM_CONF=$conf sinfo >&2
}

stop_pid() {  # name pid: TERM, wait, then KILL
  local name=$1 pid=$2
  say "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 80); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
  say "$name (pid $pid) ignored SIGTERM for 20 s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
  die "$name (pid $pid) is still running"
}

cancel_jobs() {  # end this cluster's jobs first, so that no job step outlives its slurmd
  local jobs
  ours slurmctld >/dev/null || return 0
  jobs=$(SLURM_CONF=$conf squeue -h -o %A 2>/dev/null | tr '\n' ' ')
  [[ -n ${jobs// /} ]] || return 0
  say "cancelling this cluster's jobs: $jobs"
  SLURM_CONF=$conf scancel $jobs 2>/dev/null || true
  # KillWait (15 s) after SIGTERM, the job's processes get SIGKILL
  for _ in $(seq 120); do
    [[ -z $(SLURM_CONF=$conf squeue -h -t running,completing -o %A 2>/dev/null) ]] && return 0
    sleep 0.25
  done
  say "jobs still running after 30 s: $(SLURM_CONF=$conf squeue -h -o '%A %T' | tr '\n' ' ')"
}

stop() {
  cancel_jobs
  local i name pid
  for (( i = ${#DAEMONS[@]} - 1; i >= 0; i-- )); do
    name=${DAEMONS[i]}
    if pid=$(ours "$name"); then stop_pid "$name" "$pid"
    elif [[ -e $dir/$name.pid ]]; then say "$name: no process of this checkout (stale $dir/$name.pid left alone)"
    fi
  done
}

case "${1:-}" in
  start) start ;;
  status) status ;;
  stop) stop ;;
  *) echo "usage: $0 start|status|stop" >&2; exit 2 ;;
esac
