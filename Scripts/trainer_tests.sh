#!/usr/bin/env bash
# Integration tests of the trainer through the real binary and mpirun, on a tiny synthetic set in a
# temporary directory (removed at the end):
#   exact_resume           2K steps straight == K steps, new mpirun, --resume auto, K more (P = 2), bit for bit
#   resume_2_to_3          a P = 2 checkpoint resumed at P = 3: head shards reassemble exactly, backbone identical
#   resume_3_to_2          the same from P = 3 back to P = 2, then training continues
#   sigterm_checkpoint     SIGTERM to one rank: a complete checkpoint at the step it stopped, exit 0
#   kill9_resume           kill -9 of a rank during checkpointing: non-zero exit, --resume auto takes the
#                          newest valid checkpoint and finishes
#   bad_config_*           exit code 2, the field named, no run directory
# Each test prints `PASS name` or `FAIL name: reason`; the last line is `N passed, N failed`.
# Usage: bash Scripts/trainer_tests.sh   (ADAFACE_BIN overrides the binary; KEEP_TMP=1 keeps the folder)
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
source "$repo/Scripts/e2e_common.sh"
bin=${ADAFACE_BIN:-$repo/.build/release/adaface-dist}
compare=(python3 "$repo/Scripts/checkpoint_compare.py")
RUN_TIMEOUT=${RUN_TIMEOUT:-120}


require_binary "$bin"

work=$(mktemp -d -t trainer-tests.XXXXXX)
background=()
cleanup() {
    for pid in "${background[@]}"; do kill -9 "$pid" 2>/dev/null; done
    if [ "${KEEP_TMP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
cd "$work" || exit 1
started=$SECONDS

# Tiny data: 64 images of 16 identities. Global batch 6 divides by 2 and 3: 10 steps per epoch.
make_tiny_set "$bin"
write_tiny_config tiny.json '"epochs": 2' '"every_steps": 2, "at_epoch_end": true, "keep_last": 20'

# train NRANKS LOG [adaface-dist train arguments...] → the exit code of mpirun (timeout: 124).
train() {
    local n=$1 log=$2
    shift 2
    timeout -k 10 "$RUN_TIMEOUT" mpirun "${mpi_flags[@]}" -n "$n" "$bin" train --config tiny.json "$@" >"$log" 2>&1
}
# The checkpoint directory named by the last "checkpoint (REASON...): DIR," line of a log.
checkpoint_in_log() { sed -nE "s/^checkpoint \\($2[^)]*\\): ([^,]+),.*/\\1/p" "$1" | tail -n 1; }
# The newest verified checkpoint under a root, according to `adaface-dist inspect`.
newest_valid() { "$bin" inspect "$1" 2>/dev/null | sed -nE 's/^newest valid: (.*)$/\1/p'; }
last_lines() { tail -n 4 "$1" | tr '\n' ' '; }

# --- 1. Exact resume at P = 2 -------------------------------------------------------------------
K=2
test_exact_resume() {
    local name=exact_resume
    if ! train 2 A.log --set run_dir=runs/A --set training.max_steps=$((2 * K)) --set checkpoint.every_steps=$K; then
        fail $name "straight run failed: $(last_lines A.log)"; return
    fi
    if ! train 2 B1.log --set run_dir=runs/B --set training.max_steps=$K --set checkpoint.every_steps=$K; then
        fail $name "first half failed: $(last_lines B1.log)"; return
    fi
    if ! train 2 B2.log --set run_dir=runs/B --set training.max_steps=$((2 * K)) --set checkpoint.every_steps=$K \
        --resume auto; then
        fail $name "resumed half failed: $(last_lines B2.log)"; return
    fi
    if ! grep -q "^resumed from runs/B/checkpoints/step-0*$K (step $K," B2.log; then
        fail $name "the second run did not resume from step $K: $(grep -m1 -E '^(resumed|training)' B2.log)"; return
    fi
    local a b
    a=$(checkpoint_in_log A.log "end of training")
    b=$(checkpoint_in_log B2.log "end of training")
    if [ -z "$a" ] || [ -z "$b" ]; then fail $name "no final checkpoint in the logs"; return; fi
    if ! "${compare[@]}" "$a" "$b" >cmp1.txt 2>&1; then
        fail $name "final checkpoints differ: $(head -n 4 cmp1.txt | tr '\n' ' ')"; return
    fi
    # Same data order and dropout: the losses of steps K+1..2K agree on every rank.
    local r
    for r in 00000 00001; do
        if ! diff <(grep -E "\"step\":($((K + 1))|$((2 * K)))," "runs/A/metrics/rank-$r.jsonl" | sed -E 's/.*("loss":[^,]*).*/\1/') \
                  <(grep -E "\"step\":($((K + 1))|$((2 * K)))," "runs/B/metrics/rank-$r.jsonl" | sed -E 's/.*("loss":[^,]*).*/\1/') \
                  >/dev/null; then
            fail $name "rank $r losses of steps $((K + 1))..$((2 * K)) differ between the runs"; return
        fi
    done
    pass $name
}

# --- 2. Resume with another rank count ----------------------------------------------------------
# resume_across NAME FROM_CHECKPOINT NEW_RANKS ROOT: copies FROM into ROOT, resumes there at NEW_RANKS
# with max_steps = its step (no step runs; the end-of-training checkpoint is written at NEW_RANKS) and
# compares that checkpoint with FROM.
resume_across() {
    local name=$1 from=$2 p=$3 root=$4
    local step
    step=$(sed -nE 's/.*"global_step" *: *([0-9]+).*/\1/p' "$from/trainer_state.json")
    mkdir -p "$root/checkpoints" && cp -r "$from" "$root/checkpoints/"
    if ! train "$p" "$name.log" --set run_dir="$root" --set training.max_steps="$step" --resume auto; then
        fail "$name" "the run at P = $p failed: $(last_lines "$name.log")"; return 1
    fi
    if ! grep -q "^resumed from $root/checkpoints/step-0*$step (step $step," "$name.log"; then
        fail "$name" "did not resume from step $step: $(grep -m1 -E '^(resumed|training)' "$name.log")"; return 1
    fi
    local out
    out=$(checkpoint_in_log "$name.log" "end of training")
    if [ -z "$out" ] || [ ! -f "$out/head-rank00000-of-$(printf %05d "$p").safetensors" ]; then
        fail "$name" "no end-of-training checkpoint written by $p ranks: $(last_lines "$name.log")"; return 1
    fi
    echo "$out" >"$name.out"
    # Weights, momentum, head shards (concatenated in rank order) and trainer state, without the
    # BatchNorm running statistics; then those alone.
    if "${compare[@]}" --skip-buffers "$from" "$out" >"$name.cmp" 2>&1; then
        pass "$name"
    else
        fail "$name" "$(head -n 4 "$name.cmp" | tr '\n' ' ')"
    fi
    if "${compare[@]}" "$from" "$out" >"$name.bn.cmp" 2>&1; then
        pass "${name}_bn_buffers"
    else
        fail "${name}_bn_buffers" "BatchNorm running statistics changed although no step ran (trainer bug: \
averageRunningStatistics re-averages identical values as sum * (1/P), not exact for P = 3): \
$(grep -c running_ "$name.bn.cmp") tensors differ, e.g. $(grep -m1 running_ "$name.bn.cmp")"
    fi
}

test_resume_across_rank_counts() {
    local from
    from=$(ls -d runs/B/checkpoints/step-0*$K 2>/dev/null | head -n 1)
    if [ -z "$from" ]; then
        # exact_resume failed early: make the P = 2 checkpoint here.
        train 2 P2.log --set run_dir=runs/P2 --set training.max_steps=$K
        from=$(checkpoint_in_log P2.log "end of training")
    fi
    if [ -z "$from" ]; then fail resume_2_to_3 "no P = 2 checkpoint"; fail resume_3_to_2 "no P = 3 checkpoint"; return; fi
    # Keep a pristine copy: later runs under runs/B may prune or replace it.
    rm -rf src2 && mkdir src2 && cp -r "$from" src2/
    from=src2/$(basename "$from")
    if ! resume_across resume_2_to_3 "$from" 3 runs/P3; then fail resume_3_to_2 "no P = 3 checkpoint"; return; fi
    local p3
    p3=$(cat resume_2_to_3.out)
    rm -rf src3 && mkdir src3 && cp -r "$p3" src3/
    resume_across resume_3_to_2 "src3/$(basename "$p3")" 2 runs/P32 || return
    # Training continues at P = 2 from the re-partitioned checkpoint.
    local name=resume_3_to_2_continues
    if ! train 2 cont.log --set run_dir=runs/P32 --set training.max_steps=$((K + 2)) --resume auto; then
        fail $name "$(last_lines cont.log)"; return
    fi
    if grep -q "^epoch 0 step $((K + 2))/$((K + 2))" cont.log && [ -n "$(checkpoint_in_log cont.log "end of training")" ]; then
        pass $name
    else
        fail $name "no step $((K + 2)) or no final checkpoint: $(last_lines cont.log)"
    fi
}

# rank_pids MPIRUN_PID → the PIDs of the rank processes (children of mpirun running the binary).
rank_pids() {
    local pid
    for pid in $(pgrep -P "$1"); do
        local cmd
        cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)
        [[ $cmd == *"adaface-dist train"* ]] && echo "$pid"
    done
}
# wait_for SECONDS COMMAND... → 0 once COMMAND succeeds, 1 after SECONDS.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ $SECONDS -ge $deadline ] && return 1
        sleep 0.2
    done
}
has_step() { grep -qE "^epoch [0-9]+ step $2/" "$1"; }
# wait_exit PID SECONDS → the exit code of a background job, or 124 (after killing it) on timeout.
wait_exit() {
    local pid=$1 deadline=$((SECONDS + $2))
    while kill -0 "$pid" 2>/dev/null; do
        if [ $SECONDS -ge $deadline ]; then kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; return 124; fi
        sleep 0.2
    done
    wait "$pid"
}

# --- 3. SIGTERM ---------------------------------------------------------------------------------
test_sigterm() {
    local name=sigterm_checkpoint
    mpirun "${mpi_flags[@]}" -n 2 "$bin" train --config tiny.json --set run_dir=runs/S --set training.epochs=100 \
        --set checkpoint.every_steps=0 --set checkpoint.at_epoch_end=false >S.log 2>&1 &
    local mpirun_pid=$!
    background+=("$mpirun_pid")
    if ! wait_for 90 has_step S.log 2; then
        kill -9 "$mpirun_pid" 2>/dev/null
        fail $name "no step 2 within 90 s: $(last_lines S.log)"; return
    fi
    local ranks
    ranks=($(rank_pids "$mpirun_pid"))
    if [ ${#ranks[@]} -ne 2 ]; then
        kill -9 "$mpirun_pid" 2>/dev/null
        fail $name "expected 2 rank processes under mpirun, found ${#ranks[@]}"; return
    fi
    kill -TERM "${ranks[1]}"
    local rc=0
    wait_exit "$mpirun_pid" 60 || rc=$?
    if [ $rc -ne 0 ]; then fail $name "mpirun exited $rc: $(last_lines S.log)"; return; fi
    if ! grep -q "^preemption signal received" S.log; then fail $name "no preemption message in the log"; return; fi
    local ckpt
    ckpt=$(checkpoint_in_log S.log signal)
    if [ -z "$ckpt" ]; then fail $name "no signal checkpoint in the log: $(last_lines S.log)"; return; fi
    local last_step
    last_step=$(sed -nE 's/^epoch [0-9]+ step ([0-9]+)\/.*/\1/p' S.log | tail -n 1)
    if [ "$(newest_valid runs/S/checkpoints)" != "$ckpt" ]; then
        fail $name "inspect's newest valid checkpoint is '$(newest_valid runs/S/checkpoints)', the log says $ckpt"; return
    fi
    local info
    info=$("$bin" inspect "$ckpt" 2>&1)
    if ! grep -qE "^step +$last_step\$" <<<"$info"; then
        fail $name "$ckpt is not at step $last_step, the last step logged"; return
    fi
    if ! grep -qE "^manifest +verified" <<<"$info"; then fail $name "$ckpt does not verify: $(head -n 2 <<<"$info")"; return; fi
    pass $name
}

# --- 4. kill -9 around a checkpoint write -------------------------------------------------------
test_kill9() {
    local name=kill9_resume root=runs/X/checkpoints
    mpirun "${mpi_flags[@]}" -n 2 "$bin" train --config tiny.json --set run_dir=runs/X --set training.epochs=100 \
        --set checkpoint.every_steps=1 >X.log 2>&1 &
    local mpirun_pid=$!
    background+=("$mpirun_pid")
    # After the first complete checkpoint, wait for the next write to start and kill a rank during it.
    if ! wait_for 90 test -d "$root/step-000000001"; then
        kill -9 "$mpirun_pid" 2>/dev/null
        fail $name "no first checkpoint within 90 s: $(last_lines X.log)"; return
    fi
    local tmp_seen=0
    if wait_for 30 compgen -G "$root/.tmp-step-*" >/dev/null; then tmp_seen=1; fi
    local ranks
    ranks=($(rank_pids "$mpirun_pid"))
    if [ ${#ranks[@]} -ne 2 ]; then
        kill -9 "$mpirun_pid" 2>/dev/null
        fail $name "expected 2 rank processes under mpirun, found ${#ranks[@]}"; return
    fi
    kill -9 "${ranks[1]}"
    local rc=0
    wait_exit "$mpirun_pid" 60 || rc=$?
    if [ $rc -eq 0 ] || [ $rc -eq 124 ]; then fail $name "mpirun exit code $rc after kill -9 (want non-zero, prompt)"; return; fi
    local expected
    expected=$(newest_valid "$root")
    if [ -z "$expected" ]; then fail $name "no valid checkpoint left after kill -9: $("$bin" inspect "$root" 2>&1 | head -n 5 | tr '\n' ' ')"; return; fi
    local step=$((10#${expected##*step-}))
    if ! train 2 X2.log --set run_dir=runs/X --set training.max_steps=$((step + 2)) --set checkpoint.every_steps=0 \
        --resume auto; then
        fail $name "the resumed run failed: $(last_lines X2.log)"; return
    fi
    if ! grep -q "^resumed from $expected (step $step," X2.log; then
        fail $name "did not resume from $expected: $(grep -m1 -E '^(resumed|training)' X2.log)"; return
    fi
    if ! grep -q "^done: 2 steps" X2.log; then fail $name "the resumed run did not finish: $(last_lines X2.log)"; return; fi
    [ $tmp_seen = 1 ] || echo "  (note: kill -9 came between checkpoint writes, no .tmp directory was seen)"
    pass $name
}

# --- 5. Bad configurations ----------------------------------------------------------------------
# bad_config NAME RANKS EXPECTED_TEXT [train arguments...]: exit code 2, EXPECTED_TEXT in the output,
# no run directory.
bad_config() {
    local name=$1 p=$2 want=$3
    shift 3
    rm -rf runs/bad
    local rc=0
    timeout -k 5 60 mpirun "${mpi_flags[@]}" -n "$p" "$bin" train --set run_dir=runs/bad "$@" >bad.log 2>&1 || rc=$?
    if [ $rc -ne 2 ]; then fail "$name" "exit code $rc, want 2: $(head -n 2 bad.log | tr '\n' ' ')"; return; fi
    if ! grep -qF -- "$want" bad.log; then fail "$name" "the message does not name '$want': $(head -n 2 bad.log | tr '\n' ' ')"; return; fi
    if [ -e runs/bad ]; then fail "$name" "the run directory was created"; return; fi
    pass "$name"
}

test_bad_configs() {
    printf '{"data": {"tran": "data"}}\n' >bad_key.json
    bad_config bad_config_unknown_key 1 "data.tran" --config bad_key.json
    printf '{"data": {"train": "data"}, "training": {"global_batch": "512"}}\n' >bad_type.json
    bad_config bad_config_wrong_type 2 "training.global_batch" --config bad_type.json
    bad_config bad_config_set_range 2 "head.sample_rate" --config tiny.json --set head.sample_rate=2
    bad_config bad_config_batch_vs_ranks 2 "training.global_batch" --config tiny.json --set training.global_batch=7
    bad_config bad_config_missing_data 2 "data.train" --config tiny.json --set data.train=no/such/data
}

# --- 6. A rank that makes no progress ends the job (the watchdog) ----------------------------------
test_watchdog() {
    local rc=0 started ended
    started=$(date +%s)
    # A step takes about a second here, far over a 0.2 s limit: every rank must stop itself.
    train 2 watchdog.log --set run_dir=runs/watchdog --set training.timeout_seconds=0.2 --resume none || rc=$?
    ended=$(date +%s)
    if [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ]; then
        fail watchdog "expected a prompt non-zero exit, got $rc: $(last_lines watchdog.log)"
    elif ! grep -q "no progress for" watchdog.log; then
        fail watchdog "the log does not name the stall: $(last_lines watchdog.log)"
    elif [ $((ended - started)) -gt 60 ]; then
        fail watchdog "the job took $((ended - started)) s to end"
    else
        pass watchdog
    fi
}

test_bad_configs
test_watchdog
test_exact_resume
test_resume_across_rank_counts
test_sigterm
test_kill9

echo "($((SECONDS - started)) s)"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
