#!/usr/bin/env bash
# Bring up a one-node Slurm cluster on loopback, everything under STATE_DIR.
#
#   bash slurm/local-up.sh [STATE_DIR]        # default /tmp/harness-slurm
#   source STATE_DIR/env.sh                   # or: export SLURM_CONF=STATE_DIR/slurm.conf
#   bash slurm/local-down.sh [STATE_DIR]
#
# Daemons: munged, [mariadbd, slurmdbd,] slurmctld, slurmd. Must run as root (slurmd
# launches jobs as the submitting user). No systemd needed.
#
# Accounting (slurmdbd + a private mariadbd) is on when both are installed, because without it
# sacct has nothing, submitit sees every job as UNKNOWN and a job that dies without writing its
# result makes job.result() wait forever. HARNESS_SLURM_ACCOUNTING=0 forces it off, =1 makes
# its absence an error, auto (default) uses it when installed.
#
# Idempotent: daemons already running from this STATE_DIR are left alone, missing ones are
# started. Ports are picked free once per STATE_DIR, so several clusters (e.g. concurrent
# test sessions in different temp dirs) can coexist on one machine.
set -euo pipefail
# The daemons live in sbin, which a non-login root shell may not have on PATH.
export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin

STATE=${1:-${HARNESS_SLURM_DIR:-/tmp/harness-slurm}}
ACCOUNTING=${HARNESS_SLURM_ACCOUNTING:-auto}
TIMEOUT=${HARNESS_SLURM_UP_TIMEOUT:-60}   # seconds per daemon; generous for a loaded 2-core box

die() { echo "local-up.sh: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (slurmd and slurmctld run as SlurmUser=root here)"
for bin in munged slurmctld slurmd scontrol sinfo; do
    command -v "$bin" >/dev/null || die "'$bin' not found: apt-get install slurm-wlm munge"
done
case $ACCOUNTING in
    auto) if command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null \
              && command -v mariadb-install-db >/dev/null; then ACCOUNTING=1; else ACCOUNTING=0; fi ;;
    1) for bin in slurmdbd mariadbd mariadb-install-db sacctmgr; do
           command -v "$bin" >/dev/null || die "'$bin' not found: apt-get install slurmdbd mariadb-server"
       done ;;
    0) ;;
    *) die "HARNESS_SLURM_ACCOUNTING must be auto, 0 or 1 (got '$ACCOUNTING')" ;;
esac

mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd -P)
RUN=$STATE/run LOG=$STATE/log MUNGE=$STATE/munge DB=$STATE/mariadb
CONF=$STATE/slurm.conf DBDCONF=$STATE/slurmdbd.conf
mkdir -p "$RUN" "$LOG" "$MUNGE" "$STATE/ctld" "$STATE/spool" "$DB"
# munged refuses a socket/key directory that others can write to.
chmod 755 "$STATE" "$MUNGE" "$RUN" "$LOG"
SOCK=$MUNGE/munge.socket.2
HOST=$(hostname -s)
export SLURM_CONF=$CONF

# Serialise concurrent calls on the same STATE_DIR. fd 9 is closed for every daemon below,
# otherwise a daemon would hold the lock for its whole life.
exec 9>"$STATE/.lock"
flock -w "$TIMEOUT" 9 || die "another local-up.sh/local-down.sh holds $STATE/.lock"

# A daemon is ours and alive when its pid file names a live (not zombie) process with the
# expected comm that was started for this STATE_DIR (its command line or environment
# mentions it): a recycled pid or another engineer's cluster never counts.
alive() {  # NAME PIDFILE
    local pid st
    [[ -r $2 ]] || return 1
    pid=$(tr -dc 0-9 2>/dev/null <"$2" || true)
    [[ -n $pid && $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]] || return 1
    st=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)
    [[ -n $st && $st != Z && $st != X ]] || return 1
    # No `| grep -q` here: under pipefail the writer's SIGPIPE turns a match into a miss.
    local info
    info=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null; tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null)
    [[ $info == *"$STATE/"* ]]
}

tail_log() {  # LOGFILE...
    local f
    for f in "$@"; do
        [[ -s $f ]] && { echo "---- tail of $f" >&2; tail -n 25 "$f" >&2; }
    done
    return 0
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_for DESCRIPTION LOG... -- COMMAND...: poll COMMAND every 0.1 s up to TIMEOUT seconds.
wait_for() {
    local what=$1 logs=() deadline=$((SECONDS + TIMEOUT))
    shift
    while [[ $1 != -- ]]; do logs+=("$1"); shift; done
    shift
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            echo "local-up.sh: timed out after ${TIMEOUT}s waiting for $what" >&2
            tail_log "${logs[@]}"
            exit 1
        fi
        sleep 0.1
    done
}

DAEMONS=(munged slurmctld slurmd)
((ACCOUNTING)) && DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)
any_alive=0
for d in munged mariadbd slurmdbd slurmctld slurmd; do
    alive "$d" "$RUN/$d.pid" && any_alive=1
done

# ---------------------------------------------------------------- configuration
# Only rewritten while nothing of this cluster runs, so live daemons never see their ports move.
if ((any_alive == 0)) || [[ ! -s $CONF ]]; then
    # A free block of 4 ports; the start depends on STATE_DIR so parallel clusters rarely probe
    # the same block.
    base=$((20000 + ($(printf '%s' "$STATE" | cksum | cut -d' ' -f1) % 2000) * 4))
    for _ in $(seq 200); do
        listening "$base" || listening $((base + 1)) || listening $((base + 2)) \
            || listening $((base + 3)) || break
        base=$((base + 4)); ((base < 29990)) || base=20000
    done
    CTLD_PORT=$base SLURMD_PORT=$((base + 1)) DBD_PORT=$((base + 2)) DB_PORT=$((base + 3))

    # nproc: never configure more CPUs than slurmd finds, or it drains the node. Memory: 90% of
    # what is available now, so jobs fit beside everything else running on a shared box.
    CPUS=$(nproc)
    avail_mb=$(awk '/^MemAvailable:/ {print int($2 / 1024)}' /proc/meminfo)
    MEM=$((avail_mb * 9 / 10))
    ((MEM >= 1000)) || MEM=1000

    if ((ACCOUNTING)); then
        acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# This connection ignores AuthInfo: the munge socket goes here instead.
AccountingStoragePass=$SOCK"
    else
        acct="AccountingStorageType=accounting_storage/none"
    fi

    cat >"$CONF.tmp" <<EOF
# Written by slurm/local-up.sh; regenerated whenever the cluster is down.
ClusterName=harness
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire=5: a requeued job otherwise waits ~130 s for the old credential to expire.
AuthInfo=socket=$SOCK,cred_expire=5
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups: works in containers and without systemd.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
# Without it every job takes the node's whole memory and jobs run one at a time.
DefMemPerCPU=1000
SchedulerType=sched/backfill
# Short intervals: requeued jobs start again in seconds, not minutes.
SchedulerParameters=sched_interval=2,bf_interval=2
ReturnToService=2
JobRequeue=1
MpiDefault=none
KillWait=5
MinJobAge=300
MailProg=/bin/true
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
$acct
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"

    if ((ACCOUNTING)); then
        # slurmdbd finds this file next to SLURM_CONF; it holds DB credentials, so 600.
        (umask 077 && cat >"$DBDCONF.tmp" <<EOF
AuthType=auth/munge
AuthInfo=socket=$SOCK
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=root
StorageLoc=slurm_acct_db
EOF
        )
        chmod 600 "$DBDCONF.tmp"
        mv "$DBDCONF.tmp" "$DBDCONF"
        echo "$DB_PORT" >"$DB/port"
    fi
fi

# Re-read the ports from the configuration actually in force.
CTLD_PORT=$(sed -n 's/^SlurmctldPort=//p' "$CONF")
SLURMD_PORT=$(sed -n 's/^SlurmdPort=//p' "$CONF")
if grep -q '^AccountingStorageType=accounting_storage/slurmdbd' "$CONF"; then
    ACCOUNTING=1 DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)
    DBD_PORT=$(sed -n 's/^AccountingStoragePort=//p' "$CONF")
    DB_PORT=$(cat "$DB/port")
else
    ACCOUNTING=0 DAEMONS=(munged slurmctld slurmd)
fi

declare -A PORT_OF=([slurmctld]=$CTLD_PORT [slurmd]=$SLURMD_PORT)
((ACCOUNTING)) && PORT_OF+=([slurmdbd]=$DBD_PORT [mariadbd]=$DB_PORT)

# Every daemon: no stdin/stdout/stderr of ours (a caller capturing output would otherwise
# wait for EOF forever) and no lock fd.
launch() {  # NAME COMMAND...
    local name=$1
    shift
    # Readiness is judged by the port, so someone else on it would look like success.
    if [[ -n ${PORT_OF[$name]:-} ]] && listening "${PORT_OF[$name]}"; then
        die "port ${PORT_OF[$name]} for $name is taken by another process; run" \
            "slurm/local-down.sh $STATE and retry (ports are re-picked while the cluster is down)"
    fi
    setsid "$@" </dev/null >>"$LOG/$name.out" 2>&1 9>&- &
    # The others fork into the background: reap their launcher so no zombie stays behind
    # where init does not reap (containers).
    [[ $name == mariadbd ]] || LAUNCHED+=($!)
}
LAUNCHED=()

# ---------------------------------------------------------------- munge
if ! alive munged "$RUN/munged.pid"; then
    if [[ ! -s $MUNGE/munge.key ]]; then
        if command -v mungekey >/dev/null; then
            mungekey -c -k "$MUNGE/munge.key"
        else
            dd if=/dev/urandom of="$MUNGE/munge.key" bs=1024 count=1 status=none
        fi
    fi
    chmod 400 "$MUNGE/munge.key"
    # --force: take over a stale socket left by a killed munged.
    launch munged munged --force --socket="$SOCK" --key-file="$MUNGE/munge.key" \
        --pid-file="$RUN/munged.pid" --log-file="$LOG/munged.log" --seed-file="$MUNGE/munged.seed"
    wait_for munged "$LOG/munged.log" "$LOG/munged.out" -- \
        bash -c 'munge -S "$1" -n | unmunge -S "$1"' _ "$SOCK"
    wait_for "munged pid file" "$LOG/munged.log" -- alive munged "$RUN/munged.pid"
fi

# ---------------------------------------------------------------- accounting
if ((ACCOUNTING)); then
    if ! alive mariadbd "$RUN/mariadbd.pid"; then
        dbopts=(--no-defaults --datadir="$DB/data" --user=root --skip-name-resolve
                --innodb-log-file-size=8M --innodb-buffer-pool-size=32M)
        # The stamp, not the directory, says the install finished: an interrupted one is redone.
        if [[ ! -e $DB/installed ]]; then
            rm -rf "$DB/data"
            # Leaves root@127.0.0.1 without a password: it listens on loopback only.
            mariadb-install-db "${dbopts[@]}" --auth-root-authentication-method=normal \
                --skip-test-db </dev/null >"$LOG/mariadb-install.log" 2>&1 9>&- \
                || { tail_log "$LOG/mariadb-install.log"; die "mariadb-install-db failed"; }
            touch "$DB/installed"
        fi
        launch mariadbd mariadbd "${dbopts[@]}" --bind-address=127.0.0.1 --port="$DB_PORT" \
            --socket="$DB/mysqld.sock" --pid-file="$RUN/mariadbd.pid" \
            --log-error="$LOG/mariadbd.log" --skip-log-bin
        wait_for "mariadbd on port $DB_PORT" "$LOG/mariadbd.log" "$LOG/mariadbd.out" -- \
            listening "$DB_PORT"
        wait_for "mariadbd pid file" "$LOG/mariadbd.log" -- alive mariadbd "$RUN/mariadbd.pid"
    fi
    if ! alive slurmdbd "$RUN/slurmdbd.pid"; then
        launch slurmdbd slurmdbd
        wait_for "slurmdbd on port $DBD_PORT" "$LOG/slurmdbd.log" "$LOG/slurmdbd.out" -- \
            listening "$DBD_PORT"
        wait_for "slurmdbd pid file" "$LOG/slurmdbd.log" -- alive slurmdbd "$RUN/slurmdbd.pid"
    fi
    # slurmctld only sends job records for a cluster the database knows.
    clusters=$(sacctmgr -n -P list cluster format=cluster 2>/dev/null || true)
    if [[ $'\n'$clusters$'\n' != *$'\nharness\n'* ]]; then
        sacctmgr -i add cluster harness >"$LOG/sacctmgr.log" 2>&1 9>&- \
            || { tail_log "$LOG/sacctmgr.log" "$LOG/slurmdbd.log"; die "sacctmgr add cluster failed"; }
    fi
fi

# ---------------------------------------------------------------- slurm
if ! alive slurmctld "$RUN/slurmctld.pid"; then
    launch slurmctld slurmctld -f "$CONF"
fi
ping_up() { [[ $(scontrol ping 2>/dev/null) == *"is UP"* ]]; }
wait_for "slurmctld (scontrol ping UP, port $CTLD_PORT)" "$LOG/slurmctld.log" "$LOG/slurmctld.out" -- ping_up
wait_for "slurmctld pid file" "$LOG/slurmctld.log" -- alive slurmctld "$RUN/slurmctld.pid"

if ! alive slurmd "$RUN/slurmd.pid"; then
    launch slurmd slurmd -f "$CONF"
fi
# Busy is as good as idle when the cluster was already up with jobs on it; a fresh cluster
# comes up idle.
node_up() {
    [[ $(sinfo -h -n "$HOST" -o %T 2>/dev/null) =~ ^(idle|mixed|allocated|completing)$ ]]
}
wait_for "node $HOST to be idle in sinfo (port $SLURMD_PORT)" \
    "$LOG/slurmd.log" "$LOG/slurmd.out" "$LOG/slurmctld.log" -- node_up
wait_for "slurmd pid file" "$LOG/slurmd.log" -- alive slurmd "$RUN/slurmd.pid"

((${#LAUNCHED[@]} == 0)) || wait "${LAUNCHED[@]}" 2>/dev/null || true
echo "export SLURM_CONF=$CONF" >"$STATE/env.sh"
echo "local-up.sh: cluster up in $STATE (daemons: ${DAEMONS[*]}; accounting: $( ((ACCOUNTING)) && echo on || echo off))" >&2
echo "export SLURM_CONF=$CONF"
