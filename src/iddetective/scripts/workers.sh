# Ingestion workers on a fleet host: start them, say which are alive, signal them, forget
# them. POSIX sh. ingest/fleet/remote_hosts.py runs this file with `sh -s`, sending before it through
# standard input the workers' environment (`export NAME=value`: URLs never appear on a
# command line, where every user of the host could read them) and `set -- ACTION ARGUMENT...`.
#
#   start COUNT PROGRAM ARGUMENT...  start COUNT detached workers; print their records
#   records                          print the records of the state file
#   alive PID...                     print "PID TICKS" of each PID still running (no zombies)
#   signal SIGNAL group|one PID...   send SIGNAL to each PID (its process group with `group`)
#   forget PID...                    remove these PIDs' records from the state file
#   log FILE                         print the end of a worker's log
#
# A record is one line of the state file: pid, start time (UTC), the process's start ticks
# (to tell it from a later process given the same pid), log file; tab-separated.

set -e
state="$HOME/.iddetective/workers.pids"
logs="$HOME/.iddetective/logs"
command_missing=127

# The process's start time: ticks since boot from /proc (Linux), else ps's lstart.
ticks_of() {
    if [ -r "/proc/$1/stat" ]; then
        sed 's/.*) //' "/proc/$1/stat" | cut -d' ' -f20
    else
        ps -o lstart= -p "$1" | tr -s ' ' _
    fi
}

# setsid gives each worker a session and process group of its own, so it outlives the SSH
# session and SIGKILL reaches its pool processes too; `$!` is the worker's own pid because
# nohup and setsid exec (a background job is never a group leader, so setsid need not fork).
start() {
    count=$1
    shift
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "$1: command not found" >&2
        exit "$command_missing"
    fi
    mkdir -p "$logs"
    detach=$(command -v setsid || true)
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    i=0
    while [ "$i" -lt "$count" ]; do
        i=$((i + 1))
        log="$logs/worker-$stamp-$$-$i.log"
        nohup $detach "$@" >"$log" 2>&1 </dev/null &
        pid=$!
        line=$(printf '%s\t%s\t%s\t%s' "$pid" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(ticks_of "$pid")" "$log")
        printf '%s\n' "$line" >>"$state"
        printf '%s\n' "$line"
    done
}

records() {
    cat "$state" 2>/dev/null || true
}

alive() {
    for pid in "$@"; do
        status=$(ps -o stat= -p "$pid" 2>/dev/null || true)
        case "$status" in "" | Z*) continue ;; esac
        printf '%s %s\n' "$pid" "$(ticks_of "$pid")"
    done
}

# `kill -- -PID` reaches the process group setsid made; it fails when there is none.
signal() {
    name=$1
    reach=$2
    shift 2
    for pid in "$@"; do
        if [ "$reach" = group ]; then
            kill "-$name" -- "-$pid" 2>/dev/null || kill "-$name" "$pid" 2>/dev/null || true
        else
            kill "-$name" "$pid" 2>/dev/null || true
        fi
    done
}

# Written aside, then renamed over the state file.
forget() {
    mkdir -p "$(dirname "$state")"
    touch "$state"
    awk -F '\t' -v pids=" $* " 'index(pids, " " $1 " ") == 0' "$state" >"$state.new"
    mv "$state.new" "$state"
}

log() {
    tail -c 2000 "$1"
}

case "$1" in
    start | records | alive | signal | forget | log)
        action=$1
        shift
        "$action" "$@"
        ;;
    *)
        echo "workers.sh: unknown action '$1'" >&2
        exit 2
        ;;
esac
