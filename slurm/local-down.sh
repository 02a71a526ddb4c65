#!/usr/bin/env bash
# Stop the cluster that slurm/local-up.sh started in STATE_DIR (default /tmp/harness-slurm).
#
#   bash slurm/local-down.sh [STATE_DIR] [--purge]     # --purge also deletes STATE_DIR
#
# Only processes named by STATE_DIR's pid files are signalled, and only when /proc/PID/comm
# matches and the process was started for this STATE_DIR: other people's daemons on a shared
# machine are never touched. Idempotent: a stopped or half-started cluster is fine.
set -euo pipefail
# The daemons live in sbin, which a non-login root shell may not have on PATH.
export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin

STATE=${HARNESS_SLURM_DIR:-/tmp/harness-slurm}
PURGE=0
for arg in "$@"; do
    case $arg in
        --purge) PURGE=1 ;;
        *) STATE=$arg ;;
    esac
done
WAIT=${HARNESS_SLURM_DOWN_TIMEOUT:-20}

[[ -d $STATE ]] || exit 0
STATE=$(cd "$STATE" && pwd -P)
RUN=$STATE/run

exec 9>"$STATE/.lock"
flock -w 60 9 || { echo "local-down.sh: $STATE/.lock is held by another up/down" >&2; exit 1; }

# Same test as local-up.sh. A zombie counts as dead: its parent may not reap it before it exits.
ours() {  # NAME PID
    local st
    [[ -n $2 && $(cat "/proc/$2/comm" 2>/dev/null) == "$1" ]] || return 1
    st=$(sed 's/^.*) //' "/proc/$2/stat" 2>/dev/null | cut -d' ' -f1)
    [[ -n $st && $st != Z && $st != X ]] || return 1
    # No `| grep -q` here: under pipefail the writer's SIGPIPE turns a match into a miss.
    local info
    info=$(tr '\0' '\n' <"/proc/$2/cmdline" 2>/dev/null; tr '\0' '\n' <"/proc/$2/environ" 2>/dev/null)
    [[ $info == *"$STATE/"* ]]
}

# slurmstepd (and the job under it) outlives slurmd by design: cancel this cluster's jobs
# while slurmctld is still there to do it, and give them KillWait to go.
ctld_pid=$(tr -dc 0-9 2>/dev/null <"$RUN/slurmctld.pid" || true)
if [[ -s $STATE/slurm.conf ]] && ours slurmctld "$ctld_pid" && ours slurmd \
        "$(tr -dc 0-9 2>/dev/null <"$RUN/slurmd.pid" || true)"; then
    export SLURM_CONF=$STATE/slurm.conf
    jobs=$(timeout 10 squeue -h -o %A 2>/dev/null || true)
    if [[ -n $jobs ]]; then
        # shellcheck disable=SC2086
        timeout 10 scancel $jobs 2>/dev/null || true
        deadline=$((SECONDS + WAIT))
        while [[ -n $(timeout 10 squeue -h -o %A 2>/dev/null || true) ]] && ((SECONDS < deadline)); do
            sleep 0.2
        done
    fi
fi

# Then the daemons, each after the ones that depend on it. (slurmstepd gets killed by it), then the services they depend on.
for name in slurmd slurmctld slurmdbd mariadbd munged; do
    pidfile=$RUN/$name.pid
    [[ -r $pidfile ]] || continue
    pid=$(tr -dc 0-9 2>/dev/null <"$pidfile" || true)
    if ours "$name" "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        deadline=$((SECONDS + WAIT))
        while ours "$name" "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
        if ours "$name" "$pid"; then
            echo "local-down.sh: $name ($pid) ignored SIGTERM for ${WAIT}s, sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
        fi
    fi
    rm -f "$pidfile"
done

exec 9>&-
if ((PURGE)); then
    rm -rf "$STATE"
fi
echo "local-down.sh: stopped the cluster in $STATE" >&2
