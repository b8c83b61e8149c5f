#!/usr/bin/env bash
# A real single-node SLURM on this machine, for tests and trying profiles/slurm.
#
#   tests/slurm/cluster.sh start    install (apt) if missing, configure, start, wait until idle
#   tests/slurm/cluster.sh stop     stop the daemons this script started
#   tests/slurm/cluster.sh status   exit 0 only when the node is idle
#
# Needs root and (the first time) apt-get with Debian 12 packages
# slurmctld slurmd slurm-client munge. No systemd: munged runs as the munge user,
# slurmctld and slurmd as root. One node (this host, from `slurmd -C`), one
# partition `main`, a fake GPU (gres gpu:1, File=/dev/null) so `--gpus=1` jobs
# schedule, no accounting database (sacct does not work: profiles use squeue).
# Config goes to /etc/slurm (where the client commands look); state, logs and pid
# files to $SLIDEGRAD_SLURM_STATE (default /var/tmp/slidegrad-slurm).
set -euo pipefail

STATE=${SLIDEGRAD_SLURM_STATE:-/var/tmp/slidegrad-slurm}
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
MARK="# written by slidegrad tests/slurm/cluster.sh"
PACKAGES=(slurmctld slurmd slurm-client munge)
WAIT_S=${SLIDEGRAD_SLURM_WAIT_S:-60}

die() { echo "cluster.sh: $*" >&2; exit 1; }
say() { echo "cluster.sh: $*"; }

alive() {  # alive PIDFILE: the pid in it runs
    local pid
    [[ -s $1 ]] || return 1
    pid=$(<"$1")
    [[ $pid =~ ^[0-9]+$ && -d /proc/$pid ]]
}

node_state() {  # the node's state as sinfo prints it (idle, mixed, down*, ...), or nothing
    timeout 10 sinfo -h -o %T 2>/dev/null | head -n1 || true
}

need_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (installs packages and starts slurm daemons); not root, giving up"
}

install() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v munged >/dev/null || missing+=(munge)
    ((${#missing[@]})) || return 0
    command -v apt-get >/dev/null || die "slurm is not installed and there is no apt-get to install ${missing[*]}"
    say "installing ${PACKAGES[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >"$STATE/apt.log" 2>&1; then
        apt-get update -qq >>"$STATE/apt.log" 2>&1 || true
        apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >>"$STATE/apt.log" 2>&1 \
            || die "apt-get install ${PACKAGES[*]} failed (see $STATE/apt.log)"
    fi
}

write_config() {
    local host node_line total_mb real_mb
    if [[ -e $CONF ]] && ! grep -qF "$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script; not touching a real cluster's config"
    fi
    host=$(hostname -s)
    # `slurmd -C` prints this machine's NodeName/CPUs/Boards/Sockets/Cores/Threads/RealMemory.
    node_line=$(slurmd -C | grep -m1 '^NodeName=') || die "slurmd -C printed no NodeName line"
    total_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    # Leave a few GiB to the OS and the snakemake main process.
    if ((total_mb > 8192)); then real_mb=$((total_mb - 3072)); else real_mb=$((total_mb * 3 / 4)); fi
    node_line=$(sed -E "s/RealMemory=[0-9]+/RealMemory=$real_mb/" <<<"$node_line")
    mkdir -p "$CONF_DIR" "$STATE/ctld" "$STATE/d"
    cat >"$CONF.new" <<CONF
$MARK
ClusterName=slidegrad
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
DefMemPerCPU=1000
# Finished jobs stay visible to squeue this long (snakemake polls squeue: no sacct here).
MinJobAge=300
ReturnToService=2
KillWait=5
InactiveLimit=0
MailProg=/bin/true
GresTypes=gpu
$node_line NodeAddr=127.0.0.1 Gres=gpu:1 State=UNKNOWN
PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
    # Without File= the node goes INVAL; /dev/null makes a schedulable fake GPU.
    printf '%s\nNodeName=%s Name=gpu File=/dev/null\n' "$MARK" "$host" >"$CONF_DIR/gres.conf"
    mv "$CONF.new" "$CONF"
}

start_munge() {
    if [[ ! -s /etc/munge/munge.key ]]; then
        if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key
        else dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; fi
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    fi
    mkdir -p /run/munge
    chown munge:munge /run/munge
    chmod 755 /run/munge
    if alive /run/munge/munged.pid && munge -n </dev/null | unmunge >/dev/null 2>&1; then
        return 0
    fi
    runuser -u munge -- munged --force
    local i
    for ((i = 0; i < 50; i++)); do
        munge -n </dev/null | unmunge >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "munged did not come up (see /var/log/munge/munged.log)"
}

wait_idle() {
    local state="" i resumed=0
    for ((i = 0; i < WAIT_S * 2; i++)); do
        state=$(node_state)
        case $state in
            idle) return 0 ;;
            down* | drain* | fail*)
                # ReturnToService=2 brings a registered node back; resume one left down/drained.
                if ((i > 6 && !resumed)); then
                    scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true
                    resumed=1
                fi ;;
        esac
        sleep 0.5
    done
    die "node not idle after ${WAIT_S}s (state '${state:-no answer}'; logs in $STATE)"
}

start() {
    need_root
    mkdir -p "$STATE"
    if alive "$STATE/slurmctld.pid" && alive "$STATE/slurmd.pid"; then
        case $(node_state) in
            idle | mixed* | allocated* | completing*)
                say "already running (node $(node_state))"
                return 0 ;;
        esac
    fi
    install
    write_config
    start_munge
    alive "$STATE/slurmctld.pid" || slurmctld
    alive "$STATE/slurmd.pid" || slurmd
    wait_idle
    say "running: node $(hostname -s) idle ($(sinfo -h -o '%c CPUs, %m MB, %G'))"
}

stop_pids() {  # stop_pids PIDFILE...: SIGTERM each live pid, wait (10 s at most), then SIGKILL
    local file pid pids=() i
    for file in "$@"; do
        if alive "$file"; then
            pid=$(<"$file")
            kill "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
    done
    for ((i = 0; i < 100; i++)); do
        local left=()
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && left+=("$pid"); done
        ((${#left[@]})) || break
        pids=("${left[@]}")
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        kill -0 "$pid" 2>/dev/null && { kill -9 "$pid" 2>/dev/null || true; say "pid $pid did not stop within 10 s; killed"; }
    done
    rm -f "$@"
}

stop() {
    need_root
    # slurmd and slurmctld each take ~2 s to save state and exit: stop them together.
    stop_pids "$STATE/slurmd.pid" "$STATE/slurmctld.pid"
    stop_pids /run/munge/munged.pid
    say "stopped"
}

status() {
    local state
    command -v sinfo >/dev/null || { echo "cluster.sh: slurm is not installed"; return 1; }
    alive "$STATE/slurmctld.pid" || { echo "cluster.sh: slurmctld is not running"; return 1; }
    alive "$STATE/slurmd.pid" || { echo "cluster.sh: slurmd is not running"; return 1; }
    state=$(node_state)
    echo "cluster.sh: node ${state:-not answering}"
    [[ $state == idle ]]
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) die "usage: $0 start|stop|status" ;;
esac
