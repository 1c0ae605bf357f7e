#!/usr/bin/env bash
# Open MPI's rsh launcher runs `AGENT HOST COMMAND...` to start its daemon (orted) on HOST, as it
# would run `ssh HOST COMMAND...`. This agent runs COMMAND in HOST's network namespace instead, with
# its own host name (a UTS namespace), through bash -c as a remote login shell would.
#
# Like an ssh session with ServerAliveInterval/ServerAliveCountMax, the agent stays in the root
# namespace as the daemon's lifeline: every NETNS_ALIVE_INTERVAL seconds (default 5) it checks that
# HOST's address still answers; after NETNS_ALIVE_COUNT (default 3) misses in a row it stops the
# daemon and exits 255, as ssh does when a server stops responding. mpirun (started with
# orte_leave_session_attached, see mpirun.sh) takes that exit as the loss of the daemon and ends the
# job. If the job is already being torn down (a rank failed first, e.g. by the trainer's watchdog),
# mpirun ignores daemon exits and waits for its TCP connection to the daemon to fail instead, which on
# a silent link takes the kernel's retransmission timeout (tcp_retries2, ~15 min): so the agent also
# closes the root namespace's TCP connections to that host (ss -K), as that timeout would in the end.
# Without the lifeline mpirun waits for a daemon it can no longer reach (its TCP connection just
# stalls). NETNS_ALIVE_INTERVAL=0 turns the lifeline off.
#
# HOST is a host's address, name (h1 …) or namespace, as recorded by cluster/local/netns.sh up.
# The state file is $NETNS_STATE (mpirun.sh sets it), else netns.sh's default location.
set -u
if [ $# -lt 2 ]; then
    echo "rsh-agent.sh: usage: rsh-agent.sh HOST COMMAND..." >&2
    exit 255
fi
host=$1
shift
prefix=${NETNS_PREFIX:-adfn}
state=${NETNS_STATE:-${NETNS_RUN_DIR:-${TMPDIR:-/tmp}/adaface-netns-$prefix}/state}
interval=${NETNS_ALIVE_INTERVAL:-5}
count=${NETNS_ALIVE_COUNT:-3}
if [ ! -s "$state" ]; then
    echo "rsh-agent.sh: no harness state at $state (run cluster/local/netns.sh up N)" >&2
    exit 255
fi
read -r name addr ns < <(awk -v h="$host" '$1 == "host" && ($2 == h || $3 == h || $4 == h) { print $2, $3, $4; exit }' "$state")
if [ -z "${ns:-}" ]; then
    echo "rsh-agent.sh: host '$host' is not one of the harness hosts ($state)" >&2
    exit 255
fi
# Like ssh: the arguments joined by spaces are one command line for the remote shell.
command_line="$*"
run=(ip netns exec "$ns" bash -c "$command_line")
if unshare --uts true 2>/dev/null; then
    run=(ip netns exec "$ns" unshare --uts bash -c 'hostname "$0" && exec bash -c "$1"' "$ns" "$command_line")
fi
if ! [[ $interval =~ ^[0-9]+$ ]] || [ "$interval" -eq 0 ]; then
    exec "${run[@]}"
fi

# alive → 0 when a TCP connection to the host (port 9) is accepted or refused within 3 s.
alive() {
    local out
    out=$(timeout 3 bash -c "exec 3<>/dev/tcp/$addr/9" 2>&1) && return 0
    [[ $out == *"refused"* ]]
}

# Its own process group, so that stopping it reaches the daemon behind the shells.
setsid "${run[@]}" &
child=$!
trap 'kill -TERM -- "-$child" 2>/dev/null' TERM INT HUP
misses=0
next=$((SECONDS + interval))
while kill -0 "$child" 2>/dev/null; do
    sleep 1
    [ $SECONDS -lt $next ] && continue
    next=$((SECONDS + interval))
    if alive; then
        misses=0
        continue
    fi
    misses=$((misses + 1))
    if [ $misses -ge "$count" ]; then
        echo "rsh-agent.sh: $name ($addr) did not answer $misses checks in a row (every $interval s): stopping its daemon (NETNS_ALIVE_INTERVAL=$interval, NETNS_ALIVE_COUNT=$count)" >&2
        kill -TERM -- "-$child" 2>/dev/null
        sleep 2
        kill -KILL -- "-$child" 2>/dev/null
        wait "$child" 2>/dev/null
        # mpirun ignores a daemon's exit once it is tearing the job down (a rank already failed) and
        # then waits for its TCP connection to that daemon to fail, which a silent link makes take
        # tcp_retries2 (about 15 minutes). Close this namespace's connections to the host now.
        command -v ss >/dev/null && ss -K -t dst "$addr" >/dev/null 2>&1
        exit 255
    fi
done
wait "$child"
