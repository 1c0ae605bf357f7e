#!/usr/bin/env bash
# Tests of the multi-node pieces under cluster/, on a tiny synthetic set in a temporary directory:
#   slurm_*               cluster/slurm/train.sbatch: syntax, header, the dry-run launch lines (mpirun
#                         and srun: ranks, threads, --resume auto, checkpoint folder), and a real run
#                         outside Slurm (SLURM_* variables set by hand, an scontrol that records its arguments,
#                         mpirun on this machine; no Slurm controller runs here):
#                         SIGUSR1 or SIGTERM to the batch shell → checkpoint, exit 0, `scontrol requeue`;
#                         the relaunch resumes and, finishing normally, does not requeue
#   netns_*               cluster/local/netns.sh: 2 hosts in network namespaces with their own
#                         addresses reaching each other; rate shaping on the veths
#   two_host_training     a 2-host training over TCP (mpirun.sh: no shared memory, daemons started in
#                         the namespaces); exit 0 and the gradient all-reduces measured on the veths
#   kill9_rank            kill -9 of a rank inside one namespace: mpirun exits non-zero promptly
#   down_while_running    `down` during a training kills everything in the namespaces, leaves no
#                         namespace, interface, process or session folder behind; `up` works again
# The netns tests need root (CAP_NET_ADMIN); without it they print SKIP and count as neither.
# Each test prints `PASS name`, `FAIL name: reason` or `SKIP name: reason`; the last line is
# `N passed, N failed`. About a minute on 2 cores.
# Usage: bash Scripts/cluster_tests.sh   (ADAFACE_BIN overrides the binary; KEEP_TMP=1 keeps the folder)
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
source "$repo/Scripts/e2e_common.sh"
src_bin=${ADAFACE_BIN:-$repo/.build/release/adaface-dist}
netns=$repo/cluster/local/netns.sh
mpirun_sh=$repo/cluster/local/mpirun.sh
sbatch=$repo/cluster/slurm/train.sbatch

skipped=0
skip() { echo "SKIP $1: $2"; skipped=$((skipped + 1)); }

require_binary "$src_bin"

work=$(mktemp -d -t cluster-tests.XXXXXX)
background=()
netns_used=0
cleanup() {
    local pid
    for pid in "${background[@]}"; do kill -9 "$pid" 2>/dev/null; done
    # Whatever of ours is still running (mpirun and ranks of a failed test; matched by our folder).
    if declare -f our_processes >/dev/null; then
        for pid in $(our_processes | awk '{ print $1 }'); do kill -9 "$pid" 2>/dev/null; done
    fi
    [ $netns_used = 1 ] && "$netns" down >/dev/null 2>&1
    if [ "${KEEP_TMP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cd "$work" || exit 1
started=$SECONDS

# A stable copy of the binary: it may be rebuilt while the tests run.
cp "$src_bin" "$work/adaface-dist" || { echo "FAIL setup: cannot copy the binary"; echo "0 passed, 1 failed"; exit 1; }
bin=$work/adaface-dist

# Tiny data: 64 images of 16 identities; global batch 6 over 2 ranks.
make_tiny_set "$bin"
write_tiny_config tiny.json '"epochs": 100' '"every_steps": 2, "at_epoch_end": true, "keep_last": 20'

last_lines() { tail -n 4 "$1" | tr '\n' ' ' | cut -c1-400; }
# wait_for SECONDS COMMAND... → 0 once COMMAND succeeds, 1 after SECONDS.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ $SECONDS -ge $deadline ] && return 1
        sleep 0.2
    done
}
has_step() { grep -qE "^epoch [0-9]+ step $2/" "$1" 2>/dev/null; }
# wait_exit PID SECONDS → the exit code of a background job, or 124 (after killing it) on timeout.
wait_exit() {
    local pid=$1 deadline=$((SECONDS + $2))
    while kill -0 "$pid" 2>/dev/null; do
        if [ $SECONDS -ge $deadline ]; then kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; return 124; fi
        sleep 0.2
    done
    wait "$pid"
}

# === Slurm template ===============================================================================
# dry LOG [VAR=value ...] [-- train.sbatch arguments] → runs the dry run with those variables.
dry() {
    local log=$1
    shift
    local vars=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do vars+=("$1"); shift; done
    [ "${1:-}" = "--" ] && shift
    env -u SLURM_JOB_ID -u SLURM_CPUS_PER_TASK -u SLURM_NTASKS_PER_NODE -u SLURM_JOB_NUM_NODES \
        DRY_RUN=1 "${vars[@]}" bash "$sbatch" "$@" >"$log" 2>&1
}
# expect NAME LOG PATTERN... → PASS if every fixed string is on the launcher line of LOG.
expect_line() {
    local name=$1 log=$2 launcher=$3
    shift 3
    local line
    line=$(grep -E "^OPENBLAS_NUM_THREADS=[0-9]+ $launcher " "$log" | head -n 1)
    if [ -z "$line" ]; then fail "$name" "no '$launcher' line in the dry run: $(last_lines "$log")"; return; fi
    local piece
    for piece in "$@"; do
        if [[ $line != *"$piece"* ]]; then fail "$name" "'$piece' missing from: $line"; return; fi
    done
    pass "$name"
}

test_slurm_static() {
    if bash -n "$sbatch" 2>syntax.log; then pass slurm_syntax; else fail slurm_syntax "$(head -n 3 syntax.log)"; fi
    if grep -qx '#SBATCH --signal=B:USR1@120' "$sbatch" && grep -qx '#SBATCH --requeue' "$sbatch"; then
        pass slurm_header
    else
        fail slurm_header "no '#SBATCH --signal=B:USR1@120' or '#SBATCH --requeue' line"
    fi
}

test_slurm_dry_runs() {
    # 3 nodes × 2 sockets, 2 tasks of 8 CPUs per node: 6 ranks of 8 threads.
    dry dry1.log SLURM_JOB_ID=777 SLURM_JOB_NUM_NODES=3 SLURM_CPUS_PER_TASK=8 SLURM_NTASKS_PER_NODE=2 \
        SOCKETS_PER_NODE=2 SHARED=/shared/team RUN_NAME=r1 CONFIG=configs/ir18_casia.json -- --set optimizer.lr=0.05
    expect_line slurm_dry_run_mpirun dry1.log mpirun "mpirun -n 6 " "--map-by ppr:1:socket --bind-to socket" \
        "-x OPENBLAS_NUM_THREADS=8" "train --config configs/ir18_casia.json" "--resume auto" "--set training.threads=8" \
        "--set checkpoint.dir=/shared/team/adaface-runs/r1/checkpoints" "--set run_dir=/shared/team/adaface-runs/r1" \
        "--set optimizer.lr=0.05"
    if grep -q "scontrol requeue 777" dry1.log; then pass slurm_dry_run_requeue_decision
    else fail slurm_dry_run_requeue_decision "the dry run does not state the requeue: $(last_lines dry1.log)"; fi
    # The same allocation, one rank per node, srun: 3 ranks of 16 threads.
    dry dry2.log LAUNCHER=srun RANKS_PER=node SLURM_JOB_NUM_NODES=3 SLURM_CPUS_PER_TASK=8 SLURM_NTASKS_PER_NODE=2 \
        SHARED=/shared/team RUN_NAME=r2 -- --dry-run
    expect_line slurm_dry_run_srun dry2.log srun "srun --mpi=pmix" "--nodes=3" "--ntasks=3" "--ntasks-per-node=1" \
        "--cpus-per-task=16" "OPENBLAS_NUM_THREADS=16" "--resume auto" "--set training.threads=16" \
        "--set checkpoint.dir=/shared/team/adaface-runs/r2/checkpoints"
    # Only SLURM_CPUS_ON_NODE known: 2 sockets share its 24 CPUs.
    dry dry3.log SLURM_CPUS_ON_NODE=24 SOCKETS_PER_NODE=2 SLURM_JOB_NUM_NODES=1
    expect_line slurm_dry_run_cpus_on_node dry3.log mpirun "mpirun -n 2 " "--set training.threads=12"
    # Outside Slurm without DRY_RUN: refuses.
    if env -u SLURM_JOB_ID bash "$sbatch" >nojob.log 2>&1; then
        fail slurm_outside_slurm_refuses "exit 0 outside a Slurm job"
    else
        pass slurm_outside_slurm_refuses
    fi
}

# A real run of the template outside Slurm: mpirun on this machine, 2 ranks, and in place of Slurm's
# scontrol a script that records its arguments (there is no Slurm controller to requeue anything).
mkdir -p recording-bin
cat >recording-bin/scontrol <<'EOF'
#!/usr/bin/env bash
echo "$*" >>"$STUB_LOG"
EOF
chmod +x recording-bin/scontrol
export STUB_LOG=$work/scontrol.calls
# sbatch_run LOG RUN_NAME RESTART [train arguments...]: call it in the background only (it execs, so
# that $! is the batch shell itself, the process Slurm would signal).
sbatch_run() {
    local log=$1 run=$2 restart=$3
    shift 3
    exec env -u SLURM_CPUS_PER_TASK -u SLURM_NTASKS_PER_NODE PATH="$work/recording-bin:$PATH" SLURM_JOB_ID=4242 \
        SLURM_JOB_NAME=requeue-test SLURM_JOB_NUM_NODES=1 SLURM_CPUS_ON_NODE=2 SLURM_RESTART_COUNT="$restart" \
        SLURM_SUBMIT_DIR="$work" RUN_NAME="$run" SOCKETS_PER_NODE=2 SHARED="$work/shared" CONFIG=tiny.json ADAFACE_BIN="$bin" \
        MPIRUN_MAP="--map-by slot --bind-to none" MPIRUN_ARGS="${mpi_flags[*]}" \
        bash "$sbatch" "$@" >"$log" 2>&1
}

# slurm_signal NAME SIGNAL RUN_NAME: the batch shell gets SIGNAL after step 2.
test_slurm_signal() {
    local name=$1 sig=$2 run=$3
    rm -f "$STUB_LOG"
    sbatch_run "$name.log" "$run" 0 &
    local pid=$!
    background+=("$pid")
    if ! wait_for 90 has_step "$name.log" 2; then
        kill -9 "$pid" 2>/dev/null
        fail "$name" "no step 2 within 90 s: $(last_lines "$name.log")"; return 1
    fi
    kill -"$sig" "$pid"
    local rc=0
    wait_exit "$pid" 90 || rc=$?
    if [ $rc -ne 0 ]; then fail "$name" "the batch script exited $rc: $(last_lines "$name.log")"; return 1; fi
    if ! grep -q "^preemption signal received" "$name.log"; then fail "$name" "no preemption message: $(last_lines "$name.log")"; return 1; fi
    if ! grep -q "got SIG$sig: forwarding SIGUSR1" "$name.log"; then fail "$name" "the batch shell did not forward SIG$sig"; return 1; fi
    if ! grep -q "^checkpoint (signal): $work/shared/adaface-runs/$run/checkpoints/step-" "$name.log"; then
        fail "$name" "no signal checkpoint under the shared folder: $(last_lines "$name.log")"; return 1
    fi
    if [ "$(cat "$STUB_LOG" 2>/dev/null)" != "requeue 4242" ]; then
        fail "$name" "scontrol was called with '$(cat "$STUB_LOG" 2>/dev/null)', want 'requeue 4242'"; return 1
    fi
    pass "$name"
}

test_slurm_relaunch() {
    local name=slurm_relaunch_resumes_no_requeue run=$1
    rm -f "$STUB_LOG"
    local ckpt step
    ckpt=$(sed -nE 's/^checkpoint \(signal\): ([^,]+),.*/\1/p' slurm_signal_usr1_requeue.log | tail -n 1)
    step=$((10#${ckpt##*step-}))
    local rc=0
    sbatch_run relaunch.log "$run" 1 --set training.max_steps=$((step + 1)) &
    local pid=$!
    background+=("$pid")
    wait_exit "$pid" 120 || rc=$?
    if [ $rc -ne 0 ]; then fail $name "the relaunch exited $rc: $(last_lines relaunch.log)"; return; fi
    if ! grep -q "^resumed from $ckpt (step $step," relaunch.log; then
        fail $name "did not resume from $ckpt: $(grep -m1 -E '^(resumed|training)' relaunch.log)"; return
    fi
    if ! grep -q "training finished (exit 0, no preemption message).*no requeue" relaunch.log; then
        fail $name "no 'finished: no requeue' decision: $(last_lines relaunch.log)"; return
    fi
    if [ -s "$STUB_LOG" ]; then fail $name "scontrol was called: $(cat "$STUB_LOG")"; return; fi
    pass $name
}

# === The network-namespace harness ================================================================
netns_ok=1
netns_why=""
if [ "$(id -u)" -ne 0 ]; then
    netns_ok=0; netns_why="not root"
elif ! command -v ip >/dev/null || ! command -v tc >/dev/null; then
    netns_ok=0; netns_why="ip/tc (iproute2) missing"
elif ! ip netns add "ctprobe$$" 2>/dev/null; then
    netns_ok=0; netns_why="ip netns add is not permitted (no CAP_NET_ADMIN?)"
else
    ip netns del "ctprobe$$"
fi

# Our own prefix and run folder (and a /24 nothing else uses, see up_any), so that a harness someone
# else has up is not touched.
export NETNS_PREFIX=ct$(printf %05d $(($$ % 100000)))
export NETNS_RUN_DIR=$work/netns
export NETNS_ALIVE_INTERVAL=5 NETNS_ALIVE_COUNT=3
# up_any LOG ARGS... → `netns.sh up ARGS` on the first free 10.213.{200…250}.0/24 (exports NETNS_SUBNET).
up_any() {
    local log=$1 i
    shift
    for i in $(seq 200 250); do
        export NETNS_SUBNET=10.213.$i.0/24
        "$netns" up "$@" >"$log" 2>&1 && return 0
        grep -q "set NETNS_SUBNET" "$log" || return 1
    done
    return 1
}

# Live processes (not zombies) that belong to this test's harness or runs.
our_processes() {
    local pid cmd state base=${NETNS_SUBNET:-none.0/24}
    base=${base%.0/24}
    for pid in $(ls /proc | grep -E '^[0-9]+$'); do
        [ "$pid" = $$ ] && continue
        cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || continue
        state=$(awk '/^State:/ { print $2 }' 2>/dev/null <"/proc/$pid/status")
        [ "$state" = Z ] && continue
        if [[ $cmd == *"$work/adaface-dist"* || $cmd == *orted*"$base.1:"* || $cmd == *rsh-agent.sh*"$base."* ]]; then
            [[ $cmd == *"cluster_tests"* ]] && continue
            echo "$pid $cmd" | cut -c1-120
        fi
    done
}
# leftovers → what of the harness is still there (nothing when clean).
leftovers() {
    ip netns list | awk '{ print $1 }' | grep "^$NETNS_PREFIX-" | sed 's/^/namespace /'
    ip -o link show | awk -F': ' '{ print $2 }' | sed 's/@.*//' | grep "^$NETNS_PREFIX-" | sed 's/^/interface /'
    ip -4 -o addr show | awk '{ print $4 }' | grep "^${NETNS_SUBNET%.0/24}\." | sed 's/^/address /'
    ls -d "${TMPDIR:-/tmp}/ompi.$NETNS_PREFIX-"* /tmp/ompi."$NETNS_PREFIX-"* 2>/dev/null | sort -u | sed 's/^/session folder /'
    [ -e "$NETNS_RUN_DIR/state" ] && echo "state file $NETNS_RUN_DIR/state"
    our_processes | sed 's/^/process /'
}
no_leftovers() { [ -z "$(leftovers)" ]; }
hosts_idle() { [ -z "$("$netns" pids h1)$("$netns" pids h2)" ]; }
# rank_in HOST → the PID of the training rank running on HOST.
rank_in() {
    local pid
    for pid in $("$netns" pids "$1" 2>/dev/null); do
        [[ $(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") == *"adaface-dist train"* ]] && echo "$pid"
    done
}
hosts_train() { # LOG [train arguments...] → mpirun.sh over the 2 hosts, in the background; sets train_pid
    local log=$1
    shift
    "$mpirun_sh" -x OPENBLAS_NUM_THREADS -- "$bin" train --config tiny.json "$@" >"$log" 2>&1 &
    train_pid=$!
    background+=("$train_pid")
}

test_netns_up() {
    if ! up_any up.log 2; then fail netns_up "$(last_lines up.log)"; return 1; fi
    local base=${NETNS_SUBNET%.0/24} i bad=""
    for i in 1 2; do
        local got
        got=$(ip -n "$NETNS_PREFIX-h$i" -4 -o addr show dev eth0 2>/dev/null | awk '{ print $4 }')
        [ "$got" = "$base.$((i + 1))/24" ] || bad+="h$i has '$got', want $base.$((i + 1))/24; "
    done
    if [ -n "$bad" ]; then fail netns_up "$bad"; return 1; fi
    pass netns_up
    if "$netns" check >check.log 2>&1 && [ "$(grep -c '^ok ' check.log)" -eq 4 ]; then
        pass netns_hosts_reach_each_other
    else
        fail netns_hosts_reach_each_other "$(tr '\n' ' ' <check.log)"
    fi
}

test_two_host_training() {
    local name=two_host_training steps=3
    local line
    line=$("$mpirun_sh" --print -- true)
    for piece in "--mca btl self,tcp" "--mca pml ob1" "--mca plm_rsh_no_tree_spawn 1" "--mca oob_tcp_if_include $NETNS_SUBNET" \
        "--mca btl_tcp_if_include $NETNS_SUBNET" "--mca plm_rsh_agent " "rsh-agent.sh" "--bind-to none"; do
        [[ $line == *"$piece"* ]] || { fail $name "mpirun.sh does not pass '$piece': $line"; return; }
    done
    "$netns" traffic --mark >/dev/null
    local t0=$SECONDS rc=0
    hosts_train two.log --set run_dir=runs/two --set training.max_steps=$steps --resume none
    wait_exit "$train_pid" 180 || rc=$?
    local took=$((SECONDS - t0))
    "$netns" traffic --since-mark >traffic.txt
    if [ $rc -ne 0 ]; then fail $name "mpirun.sh exited $rc: $(last_lines two.log)"; return; fi
    if ! grep -q "^done: $steps steps" two.log || ! grep -q "2 rank(s)" two.log; then
        fail $name "no 2-rank run of $steps steps: $(last_lines two.log)"; return
    fi
    # IR-18's gradients are ~96 MB of float32: each step's all-reduce moves tens of MB each way.
    local h sent received min=$((50 * 1000 * 1000))
    for h in h1 h2; do
        read -r sent received < <(awk -v h=$h '$1 == h { print $3, $4 }' traffic.txt)
        if [ "${sent:-0}" -lt $min ] || [ "${received:-0}" -lt $min ]; then
            fail $name "$h sent ${sent:-?} and received ${received:-?} bytes over its veth, want > $min each"; return
        fi
    done
    echo "  ($steps steps in $took s; bytes over the veths:"
    sed 's/^/    /' traffic.txt
    awk -v s=$steps '$1 == "h1" { h1 = $3 } $1 == "h2" { h2 = $3 }
        END { printf "    h2 sent %.1f MB per step (the gradient all-reduce); h1 sent %.1f MB more in all (rank 0'"'"'s initial broadcast))\n", h2 / s / 1e6, (h1 - h2) / 1e6 }' traffic.txt
    pass $name
}

test_kill9_rank() {
    local name=kill9_rank
    hosts_train kill.log --set run_dir=runs/kill --resume none
    if ! wait_for 90 has_step kill.log 2; then
        kill -9 "$train_pid" 2>/dev/null
        fail $name "no step 2 within 90 s: $(last_lines kill.log)"; return
    fi
    local victim
    victim=$(rank_in h2)
    if [ -z "$victim" ]; then kill -9 "$train_pid"; fail $name "no training rank found in h2's namespace"; return; fi
    local t0=$SECONDS rc=0
    kill -9 "$victim"
    wait_exit "$train_pid" 60 || rc=$?
    if [ $rc -eq 0 ] || [ $rc -eq 124 ]; then fail $name "mpirun exit code $rc after kill -9 of a rank (want non-zero within 60 s)"; return; fi
    echo "  (mpirun exited $rc, $((SECONDS - t0)) s after kill -9 of rank PID $victim on h2)"
    if ! wait_for 10 hosts_idle; then
        fail $name "processes left in the namespaces: $("$netns" pids h1 | tr '\n' ' ') $("$netns" pids h2 | tr '\n' ' ')"; return
    fi
    pass $name
}

test_down_while_running() {
    local name=down_while_running
    hosts_train down.log --set run_dir=runs/down --resume none
    if ! wait_for 90 has_step down.log 1; then
        kill -9 "$train_pid" 2>/dev/null
        fail $name "no step 1 within 90 s: $(last_lines down.log)"; return
    fi
    local rc=0
    if ! "$netns" down >down_cmd.log 2>&1; then fail $name "down failed: $(last_lines down_cmd.log)"; return; fi
    wait_exit "$train_pid" 30 || rc=$?
    if [ $rc -eq 0 ] || [ $rc -eq 124 ]; then fail $name "mpirun exit code $rc after down (want non-zero within 30 s)"; return; fi
    local left=""
    wait_for 10 no_leftovers || left=$(leftovers)
    if [ -n "$left" ]; then fail $name "left behind: $(tr '\n' ';' <<<"$left")"; return; fi
    pass $name
    # The same hosts come up again.
    if "$netns" up 2 >up2.log 2>&1 && "$netns" check >check2.log 2>&1; then
        pass netns_up_again
    else
        fail netns_up_again "$(last_lines up2.log) $(tr '\n' ' ' <check2.log 2>/dev/null)"
    fi
    "$netns" down >/dev/null 2>&1
    left=$(leftovers)
    if [ -z "$left" ] && "$netns" down | grep -q "nothing to tear down"; then
        pass netns_down_clean
    else
        fail netns_down_clean "left behind: $(tr '\n' ';' <<<"$left")"
    fi
}

test_shaping() {
    local name=netns_rate_shaping
    if ! "$netns" up 2 --rate 100mbit --delay 1ms >shape.log 2>&1; then fail $name "$(last_lines shape.log)"; return; fi
    local qroot qhost
    qroot=$(tc qdisc show dev "$NETNS_PREFIX-h1")
    qhost=$(ip netns exec "$NETNS_PREFIX-h1" tc qdisc show dev eth0)
    if tc qdisc add dev "$NETNS_PREFIX-br" root netem delay 1us 2>/dev/null; then
        tc qdisc del dev "$NETNS_PREFIX-br" root
        [[ $qhost == *netem*delay* ]] || { fail $name "netem exists but h1's eth0 has: $qhost"; "$netns" down >/dev/null; return; }
        echo "  (netem available: h1's eth0 has: $qhost)"
    else
        grep -q "no netem qdisc" shape.log || { fail $name "netem is missing but up did not say so: $(last_lines shape.log)"; "$netns" down >/dev/null; return; }
        [[ $qhost == *tbf*rate\ 100Mbit* ]] || { fail $name "h1's eth0 has no 100mbit tbf: $qhost"; "$netns" down >/dev/null; return; }
        echo "  (no netem in this kernel: --delay ignored with a warning; tbf on both ends)"
    fi
    [[ $qroot == *rate\ 100Mbit* ]] || { fail $name "h1's bridge-side veth has no 100mbit limit: $qroot"; "$netns" down >/dev/null; return; }
    # 25 MB at 100 Mbit/s takes 2 s; unshaped it takes a few hundredths.
    if command -v python3 >/dev/null; then
        local addr2=${NETNS_SUBNET%.0/24}.3 took
        ip netns exec "$NETNS_PREFIX-h2" python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5001)); s.listen(1); c, _ = s.accept()
while c.recv(1 << 20): pass' "$addr2" &
        local server=$!
        background+=("$server")
        sleep 0.5
        took=$(ip netns exec "$NETNS_PREFIX-h1" python3 -c '
import socket, sys, time
for _ in range(50):
    try: s = socket.create_connection((sys.argv[1], 5001)); break
    except OSError: time.sleep(0.2)
b = b"x" * (1 << 20); t = time.time()
for _ in range(25): s.sendall(b)
s.shutdown(socket.SHUT_WR); s.recv(1); print("%.2f" % (time.time() - t))' "$addr2" 2>/dev/null)
        wait_exit "$server" 10 >/dev/null 2>&1
        if [ -z "$took" ] || awk -v t="$took" 'BEGIN { exit !(t < 1.5) }'; then
            fail $name "25 MB crossed a 100 Mbit/s link in '${took:-?}' s (want ≥ 1.5 s)"; "$netns" down >/dev/null; return
        fi
        echo "  (25 MB over the 100 Mbit/s link in $took s)"
    fi
    "$netns" down >/dev/null
    pass $name
}

# === run ==========================================================================================
test_slurm_static
test_slurm_dry_runs
test_slurm_signal slurm_signal_usr1_requeue USR1 sig-usr1 && test_slurm_relaunch sig-usr1
test_slurm_signal slurm_sigterm_forwarded_requeue TERM sig-term

if [ $netns_ok = 0 ]; then
    echo "!!! SKIPPING the network-namespace harness tests: $netns_why. They need root with CAP_NET_ADMIN. !!!"
    for t in netns_up netns_hosts_reach_each_other two_host_training kill9_rank down_while_running netns_up_again \
        netns_down_clean netns_rate_shaping; do
        skip $t "$netns_why"
    done
else
    netns_used=1
    if test_netns_up; then
        test_two_host_training
        test_kill9_rank
        test_down_while_running
    fi
    test_shaping
fi

echo "($((SECONDS - started)) s)"
[ $skipped -gt 0 ] && echo "($skipped skipped: $netns_why)"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
