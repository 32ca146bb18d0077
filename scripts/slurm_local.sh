#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, from Debian's packages, for tests and trying things out.
#
#   scripts/slurm_local.sh start    # as root: install slurmctld/slurmd/munge if missing, start them
#   scripts/slurm_local.sh status   # exit 0 when the cluster answers
#   scripts/slurm_local.sh env      # the line to eval: export SLURM_CONF=...
#   scripts/slurm_local.sh stop     # cancel its jobs, end the daemons it started (by PID)
#
# Everything lives under $SLURM_LOCAL_DIR (default /tmp/moi-slurm): slurm.conf, a munge key and socket
# of its own, state, spool, logs and PID files; nothing under /etc is written, so an existing SLURM or
# munge on the machine is left alone. Client commands (sbatch, squeue, submitit) find the cluster through
# SLURM_CONF=$SLURM_LOCAL_DIR/slurm.conf. `start` is idempotent: a running cluster is reused.
# The node declares $SLURM_LOCAL_CPUS CPUs (default: the larger of nproc and 8, with
# SlurmdParameters=config_overrides), so tests can run several small jobs at the same moment on a
# 2-core machine. For quick tests a requeued job may start again after about 10 s (cred_expire=10;
# SLURM's default holds it 120 s) and the scheduler looks at pending jobs every 5 s. There is no
# accounting database: `sacct` does not answer here, so submitit warns that it cannot read job states.
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-/tmp/moi-slurm}
CONF=$DIR/slurm.conf
HOST=$(hostname -s)
CTLD_PORT=${SLURM_LOCAL_PORT:-6817}
SLURMD_PORT=$((CTLD_PORT + 1))
NPROC=$(nproc)
CPUS=${SLURM_LOCAL_CPUS:-$((NPROC > 8 ? NPROC : 8))}
MEM_MB=$(awk '/MemTotal/ {printf "%d", $2 * 0.8 / 1024}' /proc/meminfo)
export SLURM_CONF=$CONF

say() { echo "slurm_local: $*"; }
die() { echo "slurm_local: $*" >&2; exit 1; }

# The PID in a daemon's PID file, if that process is alive and is that daemon.
alive() {
    local name=$1 file=$2 pid
    [[ -s $file ]] || return 1
    pid=$(<"$file")
    [[ $pid =~ ^[0-9]+$ ]] && [[ -r /proc/$pid/comm ]] && [[ $(</proc/"$pid"/comm) == "$name" ]] || return 1
    echo "$pid"
}

answers() { timeout 10 sinfo -h -o %T 2>/dev/null | grep -Eq '^(idle|mixed|allocated|completing)'; }

running() {
    alive munged "$DIR/munge/munged.pid" >/dev/null && alive slurmctld "$DIR/slurmctld.pid" >/dev/null \
        && alive slurmd "$DIR/slurmd.pid" >/dev/null && answers
}

install_packages() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null && return 0
    command -v apt-get >/dev/null || die "slurmctld, slurmd, slurm-client and munge are missing and there is no apt-get"
    say "installing slurmctld slurmd slurm-client munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q slurmctld slurmd slurm-client munge >"$DIR/apt.log" 2>&1 \
        || { apt-get update -q >>"$DIR/apt.log" 2>&1 && apt-get install -y -q slurmctld slurmd slurm-client munge >>"$DIR/apt.log" 2>&1; } \
        || die "apt-get install failed; see $DIR/apt.log"
}

write_conf() {
    cat >"$CONF" <<EOF
# Written by scripts/slurm_local.sh: a single-node cluster for tests.
ClusterName=moi-local
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket,cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=5
SlurmUser=root
SlurmdUser=root
ReturnToService=2
SlurmdParameters=config_overrides
KillWait=5
MinJobAge=600
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmdSpoolDir=$DIR/spool
StateSaveLocation=$DIR/state
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    alive munged "$DIR/munge/munged.pid" >/dev/null && return 0
    mkdir -p "$DIR/munge"
    if [[ ! -s $DIR/munge/munge.key ]]; then
        head -c 1024 /dev/urandom >"$DIR/munge/munge.key"
    fi
    chown -R munge:munge "$DIR/munge"
    chmod 700 "$DIR/munge"
    chmod 400 "$DIR/munge/munge.key"
    runuser -u munge -- munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
        --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed" \
        || die "munged did not start; see $DIR/munge/munged.log"
    for _ in $(seq 50); do
        munge -n -S "$DIR/munge/munge.socket" 2>/dev/null | unmunge -S "$DIR/munge/munge.socket" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "munge does not answer; see $DIR/munge/munged.log"
}

start() {
    [[ $(id -u) == 0 ]] || die "needs root (to install packages and run slurmd); run: sudo $0 start"
    if running; then
        say "already running ($CONF)"
        return 0
    fi
    mkdir -p "$DIR"
    chmod 755 "$DIR"
    install_packages
    # A fresh cluster: daemons of an earlier start that are still alive are ended, old state dropped.
    stop_daemons quiet
    rm -rf "$DIR/state" "$DIR/spool" "$DIR/log"
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
    write_conf
    start_munge
    slurmctld -f "$CONF" || die "slurmctld did not start; see $DIR/log/slurmctld.log"
    slurmd -f "$CONF" || die "slurmd did not start; see $DIR/log/slurmd.log"
    for _ in $(seq 60); do
        answers && break
        sleep 1
    done
    answers || die "the node did not come up within a minute; see $DIR/log/"
    timeout 60 srun -N1 -t 1 hostname >/dev/null || die "srun hostname failed; see $DIR/log/"
    say "running: partition debug, node $HOST, $CPUS CPUs, ${MEM_MB} MB ($CONF)"
    echo "export SLURM_CONF=$CONF"
}

stop_daemons() {
    local name file pid
    for name in slurmd slurmctld munged; do
        file=$DIR/$name.pid
        [[ $name == munged ]] && file=$DIR/munge/munged.pid
        pid=$(alive "$name" "$file") || continue
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
        [[ ${1:-} == quiet ]] || say "stopped $name (pid $pid)"
    done
}

stop() {
    if alive slurmctld "$DIR/slurmctld.pid" >/dev/null; then
        local jobs
        jobs=$(timeout 10 squeue -h -o %A 2>/dev/null || true)
        if [[ -n $jobs ]]; then
            # shellcheck disable=SC2086
            timeout 10 scancel $jobs 2>/dev/null || true
            for _ in $(seq 20); do
                [[ -z $(timeout 10 squeue -h -o %A 2>/dev/null || true) ]] && break
                sleep 0.5
            done
        fi
    fi
    stop_daemons
}

status() {
    local name file pid ok=0
    for name in munged slurmctld slurmd; do
        file=$DIR/$name.pid
        [[ $name == munged ]] && file=$DIR/munge/munged.pid
        if pid=$(alive "$name" "$file"); then say "$name running (pid $pid)"; else say "$name not running"; ok=1; fi
    done
    if [[ $ok == 0 ]] && answers; then
        sinfo
        return 0
    fi
    say "not running (start it with: $0 start)"
    return 1
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
