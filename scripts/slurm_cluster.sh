#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for the tests and to try `make sweep LAUNCHER=slurm`:
# this host is the controller and the only compute node, in one partition `debug` (all its CPUs, 90 %
# of its memory, jobs of at most 60 minutes), without accounting; a requeued job starts again after
# 20 s instead of SLURM's default 120 s. Needs root (Debian's packages and daemons).
#
#   bash scripts/slurm_cluster.sh start    # installs slurmctld, slurmd, slurm-client and munge where
#                                          # missing, writes /etc/slurm/slurm.conf, starts the daemons
#   bash scripts/slurm_cluster.sh status   # sinfo, squeue
#   bash scripts/slurm_cluster.sh stop     # stops what `start` started, removes what it wrote
#
# `start` is idempotent: a cluster that already answers (this one or a real one) is left alone.
# Exit status of `start`: 0 the cluster answers; 3 SLURM cannot run here (not root, no apt-get, the
# packages cannot be installed, or a slurm.conf that this script did not write); 1 anything else.
# Daemons' logs and state: $FACTORIAL_SLURM_DIR (default /var/tmp/factorial-slurm).
set -euo pipefail

STATE=${FACTORIAL_SLURM_DIR:-/var/tmp/factorial-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by factorial's scripts/slurm_cluster.sh"
PARTITION=debug
MAX_TIME_MIN=60

say() { echo "slurm_cluster: $*" >&2; }
cannot() { say "SLURM cannot run here: $*"; exit 3; }

answers() {  # the controller answers and a node of the partition is up
    command -v sinfo > /dev/null 2>&1 || return 1
    local states
    states=$(timeout 10 sinfo -h -o %T 2> /dev/null) || return 1
    grep -qE '^(idle|mixed|allocated|completing)' <<< "$states"
}

ours() { [ -f "$CONF" ] && grep -qF "$MARK" "$CONF"; }

install_packages() {
    local missing=()
    command -v slurmctld > /dev/null 2>&1 || missing+=(slurmctld)
    command -v slurmd > /dev/null 2>&1 || missing+=(slurmd)
    command -v sbatch > /dev/null 2>&1 || missing+=(slurm-client)
    command -v munged > /dev/null 2>&1 || missing+=(munge)
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get > /dev/null 2>&1 || cannot "${missing[*]} missing and no apt-get"
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } > "$STATE/apt.log" 2>&1 \
        || cannot "apt-get install ${missing[*]} failed (see $STATE/apt.log)"
}

start_munge() {
    if munge -n < /dev/null 2> /dev/null | unmunge > /dev/null 2>&1; then
        return 0  # a munged already answers
    fi
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    munged --force --pid-file="$STATE/munged.pid" --log-file="$STATE/munged.log"
    touch "$STATE/started-munged"
    for _ in $(seq 50); do
        munge -n < /dev/null 2> /dev/null | unmunge > /dev/null 2>&1 && return 0
        sleep 0.1
    done
    say "munged does not answer (see $STATE/munged.log)"
    exit 1
}

write_conf() {
    local host cpus mem_mb
    host=$(hostname -s)
    cpus=$(nproc)
    mem_mb=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
    mkdir -p /etc/slurm "$STATE/ctld" "$STATE/d"
    cat > "$CONF" << EOF
$MARK: remove it with \`bash scripts/slurm_cluster.sh stop\`.
ClusterName=factorial
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job waits this long before it starts again (SLURM's default: 120 s).
AuthInfo=cred_expire=20
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
KillWait=5
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=$MAX_TIME_MIN State=UP
EOF
}

start_daemon() {  # name, pid file
    local name=$1 pidfile=$2
    if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2> /dev/null; then
        return 0
    fi
    "$name"
}

start() {
    if answers; then
        say "SLURM already answers: $(sinfo -h -o '%P %D nodes %c CPUs %T' | tr '\n' ' ')"
        return 0
    fi
    [ "$(id -u)" -eq 0 ] || cannot "root is needed to install and start the daemons"
    if [ -f "$CONF" ] && ! ours; then
        cannot "$CONF exists and was not written by this script (a real cluster's configuration?)"
    fi
    mkdir -p "$STATE"
    install_packages
    start_munge
    write_conf
    start_daemon slurmctld "$STATE/slurmctld.pid"
    start_daemon slurmd "$STATE/slurmd.pid"
    for _ in $(seq 300); do
        if answers; then
            say "started: partition $PARTITION, $(sinfo -h -o '%D node(s), %c CPUs, %m MB, %l max')"
            return 0
        fi
        sleep 0.1
    done
    say "the daemons started but no node came up in 30 s (see $STATE/slurmctld.log, $STATE/slurmd.log)"
    exit 1
}

stop_pid() {  # pid file, name
    local pidfile=$1 name=$2 pid
    [ -s "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2> /dev/null; then
        kill "$pid"
        for _ in $(seq 100); do
            kill -0 "$pid" 2> /dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2> /dev/null; then
            say "$name ($pid) did not stop on SIGTERM in 10 s: SIGKILL"
            kill -9 "$pid" 2> /dev/null || true
        fi
    fi
    rm -f "$pidfile"
}

stop() {
    if ! ours; then
        say "no cluster of this script to stop ($CONF is not ours or absent)"
        return 0
    fi
    if command -v scancel > /dev/null 2>&1; then  # the jobs first, so that slurmd stops their processes
        timeout 10 scancel --user="$(id -un)" 2> /dev/null || true
        for _ in $(seq 100); do
            [ -z "$(timeout 10 squeue -h -o %i 2> /dev/null)" ] && break
            sleep 0.1
        done
    fi
    stop_pid "$STATE/slurmd.pid" slurmd
    stop_pid "$STATE/slurmctld.pid" slurmctld
    if [ -f "$STATE/started-munged" ]; then
        stop_pid "$STATE/munged.pid" munged
        rm -f "$STATE/started-munged"
    fi
    rm -f "$CONF"
    rm -rf "$STATE/ctld" "$STATE/d"
    say "stopped (logs kept in $STATE)"
}

status() {
    if answers; then
        sinfo
        squeue
    else
        say "no SLURM cluster answers"
        return 1
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start | stop | status" >&2; exit 2 ;;
esac
