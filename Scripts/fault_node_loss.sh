#!/usr/bin/env bash
# Fault test: a node lost in the local multi-host harness (cluster/local). Two hosts in network
# namespaces train over TCP with a checkpoint every 2 steps and training.timeout_seconds = TIMEOUT;
# once a checkpoint exists, h2's link is cut (its veth goes down: packets vanish, nothing is closed).
#   node_loss_ends_job          mpirun ends, non-zero, within max(TIMEOUT, lifeline) + MARGIN seconds
#   node_loss_watchdog          the reachable rank's watchdog reported the stall (when the lifeline
#                               is slower than TIMEOUT, so that the watchdog comes first)
#   node_loss_restore_clean     after `restore`, no process is left on either host and they reach each other
#   node_loss_resume            a relaunch on the same hosts with --resume auto starts from the newest
#                               complete checkpoint (`resumed from ...`) and finishes with exit 0
#   node_loss_teardown_clean    `down` leaves no namespace, interface, address, session folder or process
# What ends the job: the trainer's watchdog makes every rank that waits longer than TIMEOUT exit 3,
# but mpirun then still waits for h2's daemon, which it can no longer reach (its TCP connection just
# stalls; Open MPI has no timeout for it). The harness's rsh agent is the daemon's lifeline, like an
# ssh session with ServerAliveInterval: after NETNS_ALIVE_COUNT failed checks NETNS_ALIVE_INTERVAL
# seconds apart it stops the daemon and mpirun ends the job. NETNS_ALIVE_INTERVAL=0 shows the hang.
# Settings: TRIALS (1), TIMEOUT (20), MARGIN (25), NETNS_ALIVE_INTERVAL (10), NETNS_ALIVE_COUNT (3).
# Each check prints `PASS name` or `FAIL name: reason`; the last line is `N passed, N failed`. Needs
# root (CAP_NET_ADMIN); otherwise it prints SKIP and `0 passed, 0 failed`. About a minute per trial.
# Usage: bash Scripts/fault_node_loss.sh   (ADAFACE_BIN overrides the binary; KEEP_TMP=1 keeps the folder)
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
source "$repo/Scripts/e2e_common.sh"
src_bin=${ADAFACE_BIN:-$repo/.build/release/adaface-dist}
netns=$repo/cluster/local/netns.sh
mpirun_sh=$repo/cluster/local/mpirun.sh
TRIALS=${TRIALS:-1}
TIMEOUT=${TIMEOUT:-20}
MARGIN=${MARGIN:-25}
export NETNS_ALIVE_INTERVAL=${NETNS_ALIVE_INTERVAL:-10}
export NETNS_ALIVE_COUNT=${NETNS_ALIVE_COUNT:-3}


require_binary "$src_bin"
why=""
if [ "$(id -u)" -ne 0 ]; then
    why="not root"
elif ! command -v ip >/dev/null; then
    why="ip (iproute2) missing"
elif ! ip netns add "fnprobe$$" 2>/dev/null; then
    why="ip netns add is not permitted (no CAP_NET_ADMIN?)"
else
    ip netns del "fnprobe$$"
fi
if [ -n "$why" ]; then
    echo "!!! SKIPPING the node-loss fault test: $why. It needs root with CAP_NET_ADMIN. !!!"
    echo "SKIP node_loss: $why"
    echo "0 passed, 0 failed"
    exit 0
fi

work=$(mktemp -d -t fault-node-loss.XXXXXX)
export NETNS_PREFIX=fn$(printf %05d $(($$ % 100000)))
export NETNS_RUN_DIR=$work/netns
background=()
our_processes() {
    local pid cmd state base=${NETNS_SUBNET:-none.0/24}
    base=${base%.0/24}
    for pid in $(ls /proc | grep -E '^[0-9]+$'); do
        [ "$pid" = $$ ] && continue
        cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || continue
        state=$(awk '/^State:/ { print $2 }' 2>/dev/null <"/proc/$pid/status")
        [ "$state" = Z ] && continue
        if [[ $cmd == *"$work/adaface-dist"* || $cmd == *orted*"$base.1:"* || $cmd == *rsh-agent.sh*"$base."* ]]; then
            [[ $cmd == *fault_node_loss* ]] && continue
            echo "$pid $cmd" | cut -c1-120
        fi
    done
}
cleanup() {
    local pid
    for pid in "${background[@]}"; do kill -9 "$pid" 2>/dev/null; done
    for pid in $(our_processes | awk '{ print $1 }'); do kill -9 "$pid" 2>/dev/null; done
    "$netns" down >/dev/null 2>&1
    if [ "${KEEP_TMP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cd "$work" || exit 1
started=$SECONDS

cp "$src_bin" "$work/adaface-dist" || { echo "FAIL setup: cannot copy the binary"; echo "0 passed, 1 failed"; exit 1; }
bin=$work/adaface-dist
make_tiny_set "$bin"
write_tiny_config tiny.json '"epochs": 100' '"every_steps": 2, "at_epoch_end": false, "keep_last": 20'

# The first free /24 of 10.213.{200…250}.0/24 (netns.sh refuses one in use).
up_ok=0
for i in $(seq 200 250); do
    export NETNS_SUBNET=10.213.$i.0/24
    if "$netns" up 2 >up.log 2>&1; then up_ok=1; break; fi
    grep -q "set NETNS_SUBNET" up.log || break
done
if [ $up_ok = 0 ]; then
    echo "FAIL setup: netns.sh up 2: $(tail -n 3 up.log | tr '\n' ' ')"
    echo "0 passed, 1 failed"
    exit 1
fi

last_lines() { tail -n 4 "$1" | tr '\n' ' ' | cut -c1-400; }
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ $SECONDS -ge $deadline ] && return 1
        sleep 0.2
    done
}
has_step() { grep -qE "^epoch [0-9]+ step $2/" "$1" 2>/dev/null; }
hosts_idle() { [ -z "$("$netns" pids h1)$("$netns" pids h2)" ]; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
newest_valid() { "$bin" inspect "$1" 2>/dev/null | sed -nE 's/^newest valid: (.*)$/\1/p'; }
hosts_train() { # LOG [train arguments...] → mpirun.sh over the 2 hosts in the background; sets train_pid
    local log=$1
    shift
    "$mpirun_sh" -x OPENBLAS_NUM_THREADS -- "$bin" train --config tiny.json "$@" >"$log" 2>&1 &
    train_pid=$!
    background+=("$train_pid")
}

lifeline=$((NETNS_ALIVE_INTERVAL * NETNS_ALIVE_COUNT))
limit=$((TIMEOUT > lifeline ? TIMEOUT : lifeline))
limit=$((limit + MARGIN))
[ "$NETNS_ALIVE_INTERVAL" -eq 0 ] && limit=$((TIMEOUT + MARGIN))
echo "training.timeout_seconds=$TIMEOUT; lifeline: NETNS_ALIVE_INTERVAL=$NETNS_ALIVE_INTERVAL × NETNS_ALIVE_COUNT=$NETNS_ALIVE_COUNT; the job must end within $limit s of the cut"

trial() {
    local t=$1 run=runs/t$1 log=trial$1.log
    local root=$run/checkpoints
    hosts_train "$log" --set run_dir="$run" --set training.timeout_seconds="$TIMEOUT" --resume none
    # A complete checkpoint first (directories appear by rename once complete), then into step 3 or 4.
    if ! wait_for 120 test -d "$root/step-000000002"; then
        kill -9 "$train_pid" 2>/dev/null
        fail node_loss_ends_job "trial $t: no checkpoint within 120 s: $(last_lines "$log")"; return
    fi
    wait_for 60 has_step "$log" 3
    sleep "$(awk -v t="$t" 'BEGIN { printf "%.1f", ((t - 1) * 0.7) % 2.1 }')"
    "$netns" cut h2 >/dev/null
    local cut_at
    cut_at=$(now)
    local last_step
    last_step=$(sed -nE 's/^epoch [0-9]+ step ([0-9]+)\/.*/\1/p' "$log" | tail -n 1)
    echo "  trial $t: cut h2's link after step $last_step was logged"
    local watchdog_after="" hard=$((limit + 60)) deadline
    deadline=$((SECONDS + hard))
    while kill -0 "$train_pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do
        if [ -z "$watchdog_after" ] && grep -q "no progress for" "$log"; then watchdog_after=$(since "$cut_at"); fi
        sleep 0.2
    done
    local rc=0 ended_after
    if kill -0 "$train_pid" 2>/dev/null; then
        ended_after=$(since "$cut_at")
        kill -9 "$train_pid" 2>/dev/null
        wait "$train_pid" 2>/dev/null
        rc=124
    else
        wait "$train_pid"
        rc=$?
        ended_after=$(since "$cut_at")
    fi
    local watchdog_text=none
    if [ -n "$watchdog_after" ]; then
        watchdog_text="$watchdog_after s"
    elif grep -q "no progress for" "$log"; then
        watchdog_after=exit watchdog_text="just before the exit"
    fi
    echo "  trial $t: cut → watchdog message: $watchdog_text; cut → mpirun exit: $ended_after s (exit code $rc)"
    grep -E "^(Error \(rank|rsh-agent.sh:)" "$log" | sed 's/^/    /' | cut -c1-200
    if [ $rc -eq 124 ]; then
        fail node_loss_ends_job "trial $t: mpirun still running $ended_after s after the cut (killed)"
    elif [ $rc -eq 0 ]; then
        fail node_loss_ends_job "trial $t: mpirun exited 0 after a node was lost"
    elif awk -v e="$ended_after" -v l="$limit" 'BEGIN { exit !(e > l) }'; then
        fail node_loss_ends_job "trial $t: the job took $ended_after s to end (limit $limit s)"
    else
        pass node_loss_ends_job
    fi
    if [ "$NETNS_ALIVE_INTERVAL" -eq 0 ] || [ "$lifeline" -gt "$TIMEOUT" ]; then
        if [ -n "$watchdog_after" ]; then pass node_loss_watchdog
        else fail node_loss_watchdog "trial $t: no 'no progress for' message from the reachable rank: $(last_lines "$log")"; fi
    fi

    "$netns" restore h2 >/dev/null
    if wait_for 20 hosts_idle && "$netns" check >check.log 2>&1; then
        pass node_loss_restore_clean
    else
        fail node_loss_restore_clean "trial $t: processes left ($("$netns" pids h1 | tr '\n' ' ') / $("$netns" pids h2 | tr '\n' ' ')) or unreachable: $(grep FAIL check.log | tr '\n' ' ')"
        "$netns" down >/dev/null; "$netns" up 2 >/dev/null
    fi

    local expected
    expected=$(newest_valid "$root")
    if [ -z "$expected" ]; then fail node_loss_resume "trial $t: no valid checkpoint left: $("$bin" inspect "$root" 2>&1 | head -n 3 | tr '\n' ' ')"; return; fi
    local step=$((10#${expected##*step-}))
    local resume_log=resume$t.log resumed_at
    resumed_at=$(now)
    hosts_train "$resume_log" --set run_dir="$run" --set training.timeout_seconds="$TIMEOUT" \
        --set training.max_steps=$((step + 2)) --resume auto
    rc=0
    local until=$((SECONDS + 180))
    while kill -0 "$train_pid" 2>/dev/null && [ $SECONDS -lt $until ]; do sleep 0.2; done
    if kill -0 "$train_pid" 2>/dev/null; then kill -9 "$train_pid"; rc=124; fi
    wait "$train_pid" 2>/dev/null || rc=$?
    if [ $rc -ne 0 ]; then fail node_loss_resume "trial $t: the relaunch exited $rc: $(last_lines "$resume_log")"; return; fi
    if ! grep -q "^resumed from $expected (step $step," "$resume_log"; then
        fail node_loss_resume "trial $t: did not resume from $expected: $(grep -m1 -E '^(resumed|training)' "$resume_log")"; return
    fi
    if ! grep -q "^done: 2 steps" "$resume_log"; then fail node_loss_resume "trial $t: did not finish: $(last_lines "$resume_log")"; return; fi
    echo "  trial $t: resumed from step $step (newest complete checkpoint), 2 more steps, exit 0 in $(since "$resumed_at") s"
    pass node_loss_resume
}

for ((t = 1; t <= TRIALS; t++)); do trial "$t"; done

"$netns" down >down.log 2>&1
sleep 1
left=$( (ip netns list | awk '{ print $1 }' | grep "^$NETNS_PREFIX-"
    ip -o link show | awk -F': ' '{ print $2 }' | sed 's/@.*//' | grep "^$NETNS_PREFIX-"
    ip -4 -o addr show | awk '{ print $4 }' | grep "^${NETNS_SUBNET%.0/24}\."
    ls -d /tmp/ompi."$NETNS_PREFIX-"* "${TMPDIR:-/tmp}/ompi.$NETNS_PREFIX-"* 2>/dev/null
    our_processes) | sort -u)
if [ -z "$left" ]; then pass node_loss_teardown_clean; else fail node_loss_teardown_clean "left behind: $(tr '\n' ';' <<<"$left")"; fi

echo "($((SECONDS - started)) s)"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
