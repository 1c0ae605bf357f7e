#!/usr/bin/env bash
# The fault-injection suite (docs/reliability.md): every fault through the real binary and mpirun, on
# a tiny synthetic set in a temporary directory, each checked against what the trainer promises.
#
#   kill9        kill -9 of a random rank at a random step or during a checkpoint write (TRIALS trials,
#                seeded): a prompt non-zero exit, then --resume auto from the newest complete
#                checkpoint, and final weights bit-identical to an uninterrupted run
#   signal       SIGTERM / SIGUSR1 (to every rank, one rank, or mpirun): a checkpoint at the step
#                reached, exit 0, and a resume that runs every remaining step exactly once, with final
#                weights bit-identical to an uninterrupted run
#   damaged      a truncated file, a flipped byte, no manifest, a manifest listing a missing shard:
#                named, skipped, the previous checkpoint used (result bit-identical); nothing loaded
#                when nothing verifies
#   disk_full    a checkpoint on a full tmpfs: a clear error, the previous checkpoint intact, and
#                checkpoint.on_disk_full stop (exit 1, clean resume) or continue (training goes on)
#   bad_data     truncated JPEGs, a bad magic, an index past the end, a label out of range, unreadable
#                files: skipped, counted and summarised; an abort past data.max_bad_fraction
#   bad_config   unknown keys, wrong types, negative sizes, a batch the ranks cannot split, a missing
#                data path, too few classes, bad arguments: exit 2, the field named, nothing written
#   nonfinite    NaN/Inf planted in the loss, a gradient or a weight (ADAFACE_DIST_INJECT_NONFINITE):
#                skipped and counted with no trace, or an abort; no checkpoint holds a non-finite value
#   repartition  kill -9, then a resume at another rank count: the head re-partitioned bit-exactly
#   node_loss    delegated to Scripts/fault_node_loss.sh when it exists
#
# Each check prints `PASS row/detail` or `FAIL row/detail: reason`; the end is a table per row and
# `N passed, N failed`; the exit code is non-zero on any failure.
#
# Usage: bash Scripts/faults.sh [--quick]
#   --quick         3 kill -9 trials and one trial of each signal (for CI; about 6 minutes on 2 cores)
#   TRIALS=20       kill -9 trials (default 20, 3 with --quick)
#   SEED=N          seed of the random kill and signal moments (default: from the clock; printed)
#   ONLY="kill9 signal"   run only these rows
#   ADAFACE_BIN     the binary (default .build/release/adaface-dist); KEEP_TMP=1 keeps the folder
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
source "$repo/Scripts/e2e_common.sh"
bin=${ADAFACE_BIN:-$repo/.build/release/adaface-dist}
tools=(python3 "$repo/Scripts/fault_data.py")
compare=(python3 "$repo/Scripts/checkpoint_compare.py")

quick=0
for arg in "$@"; do
    case $arg in
        --quick) quick=1 ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $arg (see --help)" >&2; exit 2 ;;
    esac
done
TRIALS=${TRIALS:-$([ $quick = 1 ] && echo 3 || echo 20)}
SEED=${SEED:-$(( $(date +%s) % 1000000 ))}
ONLY=${ONLY:-}
RUN_TIMEOUT=${RUN_TIMEOUT:-240}      # a whole run of the tiny set; generous for a shared machine
PROMPT_EXIT=${PROMPT_EXIT:-30}       # seconds within which a job must end after a rank dies

declare -A row_pass row_fail row_note
current_row=""
pass() { echo "PASS $current_row/$1"; passed=$((passed + 1)); row_pass[$current_row]=$(( ${row_pass[$current_row]:-0} + 1 )); }
fail() { echo "FAIL $current_row/$1: $2"; failed=$((failed + 1)); row_fail[$current_row]=$(( ${row_fail[$current_row]:-0} + 1 )); }
note() { row_note[$current_row]="$1"; }
wanted() { [ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]]; }

require_binary "$bin"

work=$(mktemp -d -t faults.XXXXXX)
mounts=()
cleanup() {
    local pid m
    # Only this shell's own background jobs that are still running (never a PID that may have been reused).
    for pid in $(jobs -p); do kill -9 "$pid" 2>/dev/null; done
    for m in "${mounts[@]}"; do umount "$m" 2>/dev/null; done
    if [ "${KEEP_TMP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
cd "$work" || exit 1
started=$SECONDS
echo "faults.sh: seed $SEED, $TRIALS kill -9 trial(s)$([ $quick = 1 ] && echo ', quick')"
echo "  reproduce: SEED=$SEED TRIALS=$TRIALS bash Scripts/faults.sh$([ $quick = 1 ] && echo ' --quick')"

# --- Helpers -------------------------------------------------------------------------------------

# A 31-bit linear congruential generator: `rand N` sets R to a number in [0, N), reproducibly from SEED.
rng=$SEED
rand() { rng=$(( (rng * 1103515245 + 12345) & 0x7fffffff )); R=$(( (rng >> 8) % $1 )); }
now() { date +%s.%N; }
seconds_between() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
max_of() { awk -v a="$1" -v b="$2" 'BEGIN { print (b > a ? b : a) }'; }
pad9() { printf %09d "$1"; }
last_lines() { grep -v -E '^(--|epoch [0-9]+ step|$)' "$1" | tail -n 3 | tr '\n' ' '; }

# train NRANKS LOG [train arguments...] → mpirun's exit code (124 on timeout).
train() {
    local n=$1 log=$2
    shift 2
    timeout -k 10 "$RUN_TIMEOUT" mpirun "${mpi_flags[@]}" -n "$n" "$bin" train --config tiny.json "$@" >"$log" 2>&1
}
# start NRANKS LOG [train arguments...]: in the background; MPIRUN is its PID.
start() {
    local n=$1 log=$2
    shift 2
    mpirun "${mpi_flags[@]}" -n "$n" "$bin" train --config tiny.json "$@" >"$log" 2>&1 &
    MPIRUN=$!
}
# rank_pid MPIRUN RANK → the PID of that rank's process (a child of mpirun).
rank_pid() {
    local pid
    for pid in $(pgrep -P "$1"); do
        if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then echo "$pid"; return; fi
    done
}
rank_pids() { local r; for ((r = 0; r < $2; r++)); do rank_pid "$1" "$r"; done; }
# wait_for SECONDS COMMAND... → 0 once COMMAND succeeds, 1 after SECONDS.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ $SECONDS -ge $deadline ] && return 1
        sleep 0.05
    done
}
# wait_exit PID SECONDS → the exit code of a background job, or 124 (after killing it) past SECONDS.
wait_exit() {
    local pid=$1 deadline=$((SECONDS + $2))
    while kill -0 "$pid" 2>/dev/null; do
        if [ $SECONDS -ge $deadline ]; then kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; return 124; fi
        sleep 0.05
    done
    wait "$pid"
}
logged_step() { grep -qsE "^epoch [0-9]+ step $2/" "$1"; }
last_logged_step() { sed -nE 's/^epoch [0-9]+ step ([0-9]+)\/.*/\1/p' "$1" | tail -n 1; }
writing() { compgen -G "$1/.tmp-step-*" >/dev/null; }
writing_or_written() { compgen -G "$1/.tmp-step-$(pad9 "$2")-*" >/dev/null || [ -d "$1/step-$(pad9 "$2")" ]; }
# The checkpoint directory of the last "checkpoint (REASON...): DIR, ..." line of a log.
checkpoint_in_log() { sed -nE "s/^checkpoint \\($2[^)]*\\): ([^,]+),.*/\\1/p" "$1" | tail -n 1; }
# The newest checkpoint under a root that verifies, according to `adaface-dist inspect`.
newest_valid() { "$bin" inspect "$1" 2>/dev/null | sed -nE 's/^newest valid: (.*)$/\1/p'; }
step_of() { local name=${1##*step-}; echo $((10#$name)); }
identical() { "${compare[@]}" "$1" "$2" >"$3" 2>&1; }
# The global steps of a rank's metrics file, in file order, space-separated.
metric_steps() { sed -nE 's/^\{"step":([0-9]+),"epoch".*/\1/p' "$1" | tr '\n' ' '; }
# "step loss" pairs of a rank's metrics file, sorted by step.
metric_losses() { sed -nE 's/^\{"step":([0-9]+),"epoch":[0-9]+,"rank":[0-9]+,"loss":([^,]+),.*/\1 \2/p' "$1" | sort -n; }

# --- Data and references -------------------------------------------------------------------------

# 64 images of 16 identities; global batch 6 splits over 2 and 3 ranks: 10 steps per epoch.
make_tiny_set "$bin"
write_tiny_config tiny.json '"epochs": 2, "max_steps": 6' '"every_steps": 2, "at_epoch_end": true, "keep_last": 2'
STEPS=6

# Uninterrupted runs of 6 steps at 2 ranks: checkpoints every 2 steps (kill -9, damage, disk) and
# every step (signals: a signal checkpoint averages the BatchNorm running statistics at the step it
# is written, as every checkpoint does, so the reference must checkpoint at every step too).
ref2="" ref1=""
reference() {
    local every=$1 log=ref$1.log
    if train 2 "$log" --set run_dir=runs/ref$every --set checkpoint.every_steps="$every"; then
        checkpoint_in_log "$log" "end of training"
    fi
}
need_ref2() { [ -n "$ref2" ] || ref2=$(reference 2); [ -n "$ref2" ]; }
need_ref1() { [ -n "$ref1" ] || ref1=$(reference 1); [ -n "$ref1" ]; }

# --- kill -9 of one rank ---------------------------------------------------------------------------
kill_max=0
kill_during=0
kill_trial() {
    local i=$1 run=runs/kill$1 root=runs/kill$1/checkpoints log=kill$1.log
    local mode victim target delay_ms
    rand 2; mode=$([ "$R" = 0 ] && echo checkpoint || echo step)
    rand 2; victim=$R
    if [ "$mode" = checkpoint ]; then
        rand $((STEPS / 2 - 1)); target=$((2 * R + 2)); rand 400; delay_ms=$R
    else
        rand $((STEPS - 1)); target=$((R + 1)); rand 800; delay_ms=$R
    fi
    start 2 "$log" --set run_dir="$run"
    local trigger
    if [ "$mode" = checkpoint ]; then
        trigger="checkpoint write of step $target began"
        wait_for "$RUN_TIMEOUT" writing_or_written "$root" "$target"
    else
        trigger="step $target was logged"
        wait_for "$RUN_TIMEOUT" logged_step "$log" "$target"
    fi || { kill -9 "$MPIRUN" 2>/dev/null; fail "trial$i" "never reached: $trigger: $(last_lines "$log")"; return; }
    sleep "$(awk -v ms="$delay_ms" 'BEGIN { printf "%.3f", ms / 1000 }')"
    local pid during=no
    pid=$(rank_pid "$MPIRUN" "$victim")
    if [ -z "$pid" ]; then kill -9 "$MPIRUN" 2>/dev/null; fail "trial$i" "rank $victim not found under mpirun"; return; fi
    writing "$root" && during=yes
    local t0 rc=0
    t0=$(now)
    kill -9 "$pid"
    wait_exit "$MPIRUN" "$PROMPT_EXIT" || rc=$?
    local secs
    secs=$(seconds_between "$t0" "$(now)")
    kill_max=$(max_of "$kill_max" "$secs")
    [ $during = yes ] && kill_during=$((kill_during + 1))
    local what="rank $victim killed ${delay_ms} ms after the $trigger (during a checkpoint write: $during)"
    if [ $rc -eq 124 ]; then fail "trial$i" "$what: the job did not end within $PROMPT_EXIT s"; return; fi
    if [ $rc -eq 0 ]; then fail "trial$i" "$what: mpirun exited 0"; return; fi
    local last expected step=0
    last=$(last_logged_step "$log")
    expected=$(newest_valid "$root")
    [ -n "$expected" ] && step=$(step_of "$expected")
    if [ "$step" -gt "${last:-0}" ]; then fail "trial$i" "$what: a checkpoint of step $step, past the last step logged ($last)"; return; fi
    if ! train 2 "kill$i.resume.log" --set run_dir="$run" --resume auto; then
        fail "trial$i" "$what: the relaunch failed: $(last_lines "kill$i.resume.log")"; return
    fi
    if [ -n "$expected" ]; then
        if ! grep -q "^resumed from $expected (step $step," "kill$i.resume.log"; then
            fail "trial$i" "$what: did not resume from $expected: $(grep -m1 -E '^(resumed|training)' "kill$i.resume.log")"; return
        fi
    elif grep -q "^resumed from" "kill$i.resume.log"; then
        fail "trial$i" "$what: no complete checkpoint, yet: $(grep -m1 '^resumed' "kill$i.resume.log")"; return
    fi
    local final
    final=$(checkpoint_in_log "kill$i.resume.log" "end of training")
    local equal=yes
    identical "$ref2" "$final" "kill$i.cmp" || equal=no
    local from="resumed from step $step"
    [ -z "$expected" ] && from="no complete checkpoint yet, started afresh"
    echo "  trial $i: $what; mpirun exit $rc after $secs s; last step logged $last, $from; final weights identical to the uninterrupted run: $equal"
    if [ $equal = yes ]; then pass "trial$i"; else fail "trial$i" "final checkpoint differs: $(head -n 3 "kill$i.cmp" | tr '\n' ' ')"; fi
    rm -rf "$run"
}
# kill -9 of mpirun itself: its ranks must not live on as orphans (they would keep writing checkpoints
# beside a relaunched job), and the resume must be exact.
mpirun_killed() {
    local name=mpirun_killed run=runs/mk log=mk.log
    start 2 "$log" --set run_dir="$run"
    if ! wait_for "$RUN_TIMEOUT" logged_step "$log" 3; then kill -9 "$MPIRUN"; fail $name "no step 3"; return; fi
    local ranks t0 left=1
    ranks=$(rank_pids "$MPIRUN" 2 | tr '\n' ' ')
    t0=$(now)
    kill -9 "$MPIRUN"
    wait "$MPIRUN" 2>/dev/null
    local deadline=$((SECONDS + PROMPT_EXIT))
    while [ $SECONDS -lt $deadline ]; do
        left=0
        for pid in $ranks; do [ -d "/proc/$pid" ] && [ "$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null)" != Z ] && left=1; done
        [ $left = 0 ] && break
        sleep 0.05
    done
    local secs
    secs=$(seconds_between "$t0" "$(now)")
    if [ $left = 1 ]; then fail $name "rank processes $ranks outlived mpirun by $PROMPT_EXIT s"; return; fi
    if ! train 2 mk.resume.log --set run_dir="$run" --resume auto ||
        ! identical "$ref2" "$(checkpoint_in_log mk.resume.log "end of training")" mk.cmp; then
        fail $name "the resume did not finish identically: $(last_lines mk.resume.log)"; return
    fi
    echo "  $name: kill -9 of mpirun after step 3: both ranks gone $secs s later; resumed, final weights identical"
    pass $name
}
row_kill9() {
    current_row=kill9
    need_ref2 || { fail reference "the uninterrupted run failed: $(last_lines ref2.log)"; return; }
    local i
    for ((i = 1; i <= TRIALS; i++)); do kill_trial "$i"; done
    [ $quick = 0 ] && mpirun_killed
    note "$TRIALS trials (seed $SEED), $kill_during during a checkpoint write; job ended ≤ ${kill_max} s after the kill$([ $quick = 0 ] && echo '; + kill -9 of mpirun')"
}

# --- SIGTERM / SIGUSR1 ---------------------------------------------------------------------------
signal_trial() {
    local name=$1 sig=$2 to=$3 run=runs/$1 log=$1.log
    rand $((STEPS - 3)); local at=$((R + 2))
    rand 600; local delay_ms=$R
    start 2 "$log" --set run_dir="$run" --set checkpoint.every_steps=1
    if ! wait_for "$RUN_TIMEOUT" logged_step "$log" "$at"; then
        kill -9 "$MPIRUN" 2>/dev/null; fail "$name" "no step $at: $(last_lines "$log")"; return
    fi
    sleep "$(awk -v ms="$delay_ms" 'BEGIN { printf "%.3f", ms / 1000 }')"
    local targets
    case $to in
        mpirun) targets=$MPIRUN ;;
        all) targets=$(rank_pids "$MPIRUN" 2 | tr '\n' ' ') ;;
        *) targets=$(rank_pid "$MPIRUN" "$to") ;;
    esac
    kill -s "$sig" $targets
    local rc=0
    wait_exit "$MPIRUN" 120 || rc=$?
    local what="SIG$sig to $([ "$to" = mpirun ] && echo mpirun || ([ "$to" = all ] && echo 'every rank' || echo "rank $to")) after step $at"
    if [ $rc -ne 0 ]; then fail "$name" "$what: exit code $rc, want 0: $(last_lines "$log")"; return; fi
    local ckpt last
    ckpt=$(checkpoint_in_log "$log" signal)
    last=$(last_logged_step "$log")
    if [ -z "$ckpt" ]; then fail "$name" "$what: no signal checkpoint: $(last_lines "$log")"; return; fi
    if [ "$(step_of "$ckpt")" != "$last" ] || [ "$(newest_valid "$run/checkpoints")" != "$ckpt" ]; then
        fail "$name" "$what: $ckpt is not the newest valid checkpoint at the last step logged ($last)"; return
    fi
    if ! train 2 "$name.resume.log" --set run_dir="$run" --set checkpoint.every_steps=1 --resume auto; then
        fail "$name" "$what: the relaunch failed: $(last_lines "$name.resume.log")"; return
    fi
    if ! grep -q "^resumed from $ckpt (step $last," "$name.resume.log"; then
        fail "$name" "$what: did not resume from $ckpt"; return
    fi
    # Every global step exactly once over the two runs, on every rank, with the uninterrupted run's loss.
    local r want
    want=$(seq -s ' ' 1 $STEPS)
    for r in 00000 00001; do
        if [ "$(metric_steps "$run/metrics/rank-$r.jsonl")" != "$want " ]; then
            fail "$name" "$what: rank $r logged steps '$(metric_steps "$run/metrics/rank-$r.jsonl")', want each of 1..$STEPS once"; return
        fi
        if ! diff <(metric_losses "$run/metrics/rank-$r.jsonl") <(metric_losses "runs/ref1/metrics/rank-$r.jsonl") >/dev/null; then
            fail "$name" "$what: rank $r's losses differ from the uninterrupted run's"; return
        fi
    done
    local final
    final=$(checkpoint_in_log "$name.resume.log" "end of training")
    if ! identical "$ref1" "$final" "$name.cmp"; then
        fail "$name" "$what: final checkpoint differs: $(head -n 3 "$name.cmp" | tr '\n' ' ')"; return
    fi
    echo "  $name: $what: checkpoint at step $last, exit 0; resumed there, steps 1..$STEPS each once, final weights identical"
    pass "$name"
    rm -rf "$run"
}
# SIGTERM to mpirun itself: Open MPI kills the ranks about a second later (odls_base_sigkill_timeout),
# usually before the checkpoint is complete. Recorded, not promised: the previous checkpoint must stay
# intact and the resume exact.
mpirun_sigterm() {
    local name=sigterm_to_mpirun run=runs/mt log=mt.log
    start 2 "$log" --set run_dir="$run" --set checkpoint.every_steps=1
    if ! wait_for "$RUN_TIMEOUT" logged_step "$log" 3; then kill -9 "$MPIRUN"; fail $name "no step 3"; return; fi
    kill -TERM "$MPIRUN"
    local rc=0
    wait_exit "$MPIRUN" 60 || rc=$?
    local newest
    newest=$(newest_valid "$run/checkpoints")
    if ! train 2 mt.resume.log --set run_dir="$run" --set checkpoint.every_steps=1 --resume auto ||
        ! identical "$ref1" "$(checkpoint_in_log mt.resume.log "end of training")" mt.cmp; then
        fail $name "after exit $rc, the resume from ${newest:-nothing} did not finish identically: $(last_lines mt.resume.log)"; return
    fi
    echo "  $name: mpirun exit $rc; signal checkpoint $(grep -q '^checkpoint (signal)' "$log" && echo written || echo 'not written (ranks killed)'); resumed from ${newest:-scratch}, final weights identical"
    pass $name
}
row_signal() {
    current_row=signal
    need_ref1 || { fail reference "the uninterrupted run failed: $(last_lines ref1.log)"; return; }
    local n=0
    signal_trial sigterm_every_rank TERM all; n=$((n + 1))
    signal_trial sigusr1_to_mpirun USR1 mpirun; n=$((n + 1))
    if [ $quick = 0 ]; then
        rand 2; signal_trial sigterm_one_rank TERM "$R"; n=$((n + 1))
        rand 2; signal_trial sigusr1_one_rank USR1 "$R"; n=$((n + 1))
        signal_trial sigterm_every_rank_2 TERM all; n=$((n + 1))
        mpirun_sigterm; n=$((n + 1))
    fi
    if [ $quick = 1 ]; then
        note "$n trials: SIGTERM to every rank, SIGUSR1 to mpirun"
    else
        note "$n trials: SIGTERM to every rank (2) or one rank, SIGUSR1 to mpirun or one rank; SIGTERM to mpirun recorded"
    fi
}

# --- Damaged checkpoints -------------------------------------------------------------------------
# damaged NAME EXPECTED_PROBLEM COMMAND...: step-4 and step-6 of the reference in a fresh root, COMMAND
# damages step-6 (run inside it), then --resume auto (with max_steps 4: load, no step, write back)
# must name the problem and load step-4: the checkpoint it writes back equals step-4 bit for bit.
damaged() {
    local name=$1 problem=$2 run=runs/dmg_$1
    shift 2
    mkdir -p "$run/checkpoints"
    cp -r pristine/step-000000004 pristine/step-000000006 "$run/checkpoints/"
    (cd "$run/checkpoints/step-000000006" && "$@") >/dev/null
    if ! train 2 "dmg_$name.log" --set run_dir="$run" --set training.max_steps=4 --resume auto; then
        fail "$name" "the resumed run failed: $(last_lines "dmg_$name.log")"; return
    fi
    if ! grep -qF "skipping damaged checkpoint $run/checkpoints/step-000000006: " "dmg_$name.log" ||
        ! grep "^skipping damaged" "dmg_$name.log" | grep -qF -- "$problem"; then
        fail "$name" "the damage is not named ('$problem'): $(grep -m1 '^skipping' "dmg_$name.log")"; return
    fi
    if ! grep -q "^resumed from $run/checkpoints/step-000000004 (step 4," "dmg_$name.log"; then
        fail "$name" "did not resume from step 4: $(grep -m1 -E '^(resumed|training)' "dmg_$name.log")"; return
    fi
    if ! identical pristine/step-000000004 "$(checkpoint_in_log "dmg_$name.log" "end of training")" "dmg_$name.cmp"; then
        fail "$name" "what was loaded differs from step 4: $(head -n 3 "dmg_$name.cmp" | tr '\n' ' ')"; return
    fi
    echo "  $name: $(grep -m1 '^skipping' "dmg_$name.log" | cut -c1-160)"
    pass "$name"
    rm -rf "$run"
}
# refused NAME RESUME_ARG EXPECTED: every checkpoint damaged; exit 1, EXPECTED in the output, no run folder.
refused() {
    local name=$1 resume=$2 want=$3 rc=0
    train 2 "dmg_$name.log" --set run_dir=runs/none --set checkpoint.dir=dmg_all --resume "$resume" || rc=$?
    if [ $rc -ne 1 ]; then fail "$name" "exit code $rc, want 1: $(last_lines "dmg_$name.log")"; return; fi
    if ! grep -qF -- "$want" "dmg_$name.log"; then fail "$name" "no '$want' in: $(last_lines "dmg_$name.log")"; return; fi
    if [ -e runs/none ]; then fail "$name" "the run folder was created"; return; fi
    pass "$name"
}
row_damaged() {
    current_row=damaged
    need_ref2 || { fail reference "the uninterrupted run failed: $(last_lines ref2.log)"; return; }
    rm -rf pristine && mkdir pristine && cp -r runs/ref2/checkpoints/step-000000004 runs/ref2/checkpoints/step-000000006 pristine/
    damaged truncated_file "file backbone.safetensors: size" truncate -s -4096 backbone.safetensors
    damaged flipped_byte "file backbone_optimizer.safetensors: CRC mismatch" "${tools[@]}" flip backbone_optimizer.safetensors
    damaged manifest_missing "manifest missing" rm manifest.json
    damaged shard_missing "shard head-rank00001-of-00002 missing" rm head-rank00001-of-00002.safetensors
    # Nothing verifies: nothing is loaded, and --resume auto does not silently start afresh.
    mkdir -p dmg_all && cp -r pristine/step-000000004 pristine/step-000000006 dmg_all/
    "${tools[@]}" flip dmg_all/step-000000004/head-rank00000-of-00002.safetensors >/dev/null
    rm dmg_all/step-000000006/manifest.json
    refused nothing_verifies_auto auto "none of the 2 checkpoint(s) under dmg_all verifies"
    refused damaged_resume_path dmg_all/step-000000004 "the checkpoint does not verify: file head-rank00000-of-00002.safetensors: CRC mismatch"
    note "4 kinds of damage on the newest checkpoint (named, skipped, the previous one loaded bit-exactly) + 2 with nothing valid (exit 1, nothing loaded or written)"
}

# --- A full disk during a checkpoint ------------------------------------------------------------------
row_disk_full() {
    current_row=disk_full
    need_ref2 || { fail reference "the uninterrupted run failed: $(last_lines ref2.log)"; return; }
    # A checkpoint is 192 MB: 300 MB holds one, not two.
    mkdir -p full_stop full_go
    if ! mount -t tmpfs -o size=300m tmpfs full_stop 2>/dev/null; then
        echo "SKIP disk_full: cannot mount a tmpfs (needs root)"; note "skipped: no tmpfs mount"; return
    fi
    mounts+=("$work/full_stop")
    local rc=0
    train 2 full_stop.log --set run_dir=runs/full_stop --set checkpoint.dir=full_stop/ck || rc=$?
    if [ $rc -ne 1 ]; then
        fail stop "exit code $rc, want 1: $(last_lines full_stop.log)"
    elif ! grep -q "^Error: checkpoint (every 2 steps) failed (disk full, checkpoint.on_disk_full = stop): .*No space left on device" full_stop.log; then
        fail stop "no clear disk-full error: $(last_lines full_stop.log)"
    elif [ "$(newest_valid full_stop/ck)" != full_stop/ck/step-000000002 ] || compgen -G "full_stop/ck/.tmp-*" >/dev/null ||
        [ "$(find full_stop/ck -name '.*.tmp-*' | wc -l)" != 0 ]; then
        fail stop "the previous checkpoint is not intact, or the failed write left files: $(ls -a full_stop/ck | tr '\n' ' ')"
    else
        echo "  stop: $(grep -m1 '^Error:' full_stop.log | cut -c1-200)"
        pass stop
        # Space comes back; the relaunch continues from step 2 and ends identical to the reference.
        mount -o remount,size=700m full_stop
        if train 2 full_stop.resume.log --set run_dir=runs/full_stop --set checkpoint.dir=full_stop/ck --resume auto &&
            grep -q "^resumed from full_stop/ck/step-000000002 (step 2," full_stop.resume.log &&
            identical "$ref2" "$(checkpoint_in_log full_stop.resume.log "end of training")" full_stop.cmp; then
            pass stop_then_resume
        else
            fail stop_then_resume "$(last_lines full_stop.resume.log) $(head -n 2 full_stop.cmp 2>/dev/null | tr '\n' ' ')"
        fi
    fi
    umount full_stop && mounts=("${mounts[@]/$work\/full_stop}")

    mount -t tmpfs -o size=300m tmpfs full_go && mounts+=("$work/full_go")
    start 2 full_go.log --set run_dir=runs/full_go --set checkpoint.dir=full_go/ck --set checkpoint.on_disk_full=continue
    if ! wait_for "$RUN_TIMEOUT" grep -q "^warning: checkpoint (every 2 steps) failed, disk full" full_go.log; then
        kill -9 "$MPIRUN" 2>/dev/null; fail continue "no disk-full warning: $(last_lines full_go.log)"; return
    fi
    local intact
    intact=$(newest_valid full_go/ck)
    mount -o remount,size=700m full_go    # space freed while the run goes on
    rc=0
    wait_exit "$MPIRUN" "$RUN_TIMEOUT" || rc=$?
    if [ "$intact" != full_go/ck/step-000000002 ]; then
        fail continue "right after the failure the newest valid checkpoint was '$intact', want step 2"
    elif [ $rc -ne 0 ]; then
        fail continue "exit code $rc: $(last_lines full_go.log)"
    elif ! grep -qE "^done: $STEPS steps.*1 checkpoint not written \(disk full\)" full_go.log ||
        ! identical "$ref2" "$(checkpoint_in_log full_go.log "end of training")" full_go.cmp; then
        fail continue "did not finish identical to the uninterrupted run: $(last_lines full_go.log)"
    else
        echo "  continue: $(grep -m1 '^warning:' full_go.log | cut -c1-200)"
        pass continue
    fi
    umount full_go && mounts=("${mounts[@]/$work\/full_go}")
    note "300 MB tmpfs (one 192 MB checkpoint fits): stop → exit 1, step 2 intact, resume identical; continue → warned, went on, identical"
}

# --- Corrupt training data ---------------------------------------------------------------------------
# bad_data_run NAME DATA EXPECTED_REASONS...: one epoch (global batch 8: every sample once) with
# max_bad_fraction 0.5; every reason listed in the log, counted in the summary and the checkpoint.
bad_data_run() {
    local name=$1 data=$2
    shift 2
    if ! train 2 "$name.log" --set run_dir=runs/$name --set data.train="$data" --set training.global_batch=8 \
        --set training.max_steps=8 --set checkpoint.every_steps=0 --set data.max_bad_fraction=0.5; then
        fail "$name" "the run failed: $(last_lines "$name.log")"; return
    fi
    local reason
    for reason in "$@"; do
        if ! grep -qE "^rank [0-9]+: bad record skipped \\($reason\\): " "$name.log"; then
            fail "$name" "no bad record of kind $reason was reported: $(grep -m3 'bad record' "$name.log" | tr '\n' ' ')"; return
        fi
    done
    local total
    total=$(sed -nE 's/^data: ([0-9]+) bad records? skipped and replaced .* over the run$/\1/p' "$name.log")
    local ckpt
    ckpt=$(checkpoint_in_log "$name.log" "end of training")
    if [ -z "$total" ] || ! grep -q "\"bad_records\" *: *$total" "$ckpt/trainer_state.json" ||
        ! grep -qE "^done: .*, $total bad records? skipped" "$name.log"; then
        fail "$name" "the bad records are not summarised and counted alike: $(grep -m1 '^data: [0-9]' "$name.log")"; return
    fi
    echo "  $name: $(grep -m1 '^data: [0-9]' "$name.log")"
    pass "$name"
}
row_bad_data() {
    current_row=bad_data
    "${tools[@]}" corrupt-rec data bad_rec >bad_rec.kinds
    "${tools[@]}" to-folder data bad_folder && "${tools[@]}" corrupt-folder bad_folder >bad_folder.kinds
    # Offline detection lists exactly the damaged records.
    "$bin" data inspect bad_rec --verify >inspect_bad.txt 2>&1
    if [ "$(sed -nE 's/^  key ([0-9]+): .*/\1/p' inspect_bad.txt | tr '\n' ' ')" = "$(cut -f1 bad_rec.kinds | tr '\n' ' ')" ]; then
        pass data_inspect_lists_them
    else
        fail data_inspect_lists_them "$(grep -A6 '^bad records' inspect_bad.txt | tr '\n' ' ')"
    fi
    bad_data_run recordio bad_rec undecodable badMagic indexOutOfRange labelOutOfRange truncated
    bad_data_run image_folder bad_folder undecodable unreadable wrongSize
    # Past the allowed fraction: a prompt abort that names the limit.
    local rc=0 t0
    t0=$SECONDS
    train 2 bad_abort.log --set run_dir=runs/bad_abort --set data.train=bad_rec --set data.max_bad_fraction=0.02 || rc=$?
    if [ $rc -eq 0 ] || [ $rc -eq 124 ]; then
        fail abort_past_max_bad_fraction "exit code $rc: $(last_lines bad_abort.log)"
    elif ! grep -qE "data.max_bad_fraction = 0.02 exceeded on rank [0-9]: [0-9]+ of [0-9]+ records read from bad_rec/train.rec were bad" bad_abort.log; then
        fail abort_past_max_bad_fraction "no clear message: $(last_lines bad_abort.log)"
    else
        echo "  abort: $(grep -m1 -o 'data.max_bad_fraction = .*above the allowed [0-9.]*%' bad_abort.log) (exit $rc after $((SECONDS - t0)) s)"
        pass abort_past_max_bad_fraction
    fi
    note "RecordIO: truncated JPEG, bad magic, index past the end, label out of range, truncated record; folder: truncated JPEG, dangling symlink, FIFO, garbage, empty file, wrong size"
}

# --- Bad configurations and arguments ----------------------------------------------------------------
# bad NAME RANKS EXPECTED_TEXT [train arguments...]: exit 2, EXPECTED_TEXT on stderr, neither the run
# folder nor the checkpoint folder created.
bad() {
    local name=$1 p=$2 want=$3
    shift 3
    rm -rf runs/bad ck_bad
    local rc=0
    timeout -k 5 60 mpirun "${mpi_flags[@]}" -n "$p" "$bin" train --set run_dir=runs/bad --set checkpoint.dir=ck_bad "$@" \
        >bad.out 2>bad.err || rc=$?
    if [ $rc -ne 2 ]; then fail "$name" "exit code $rc, want 2: $(head -n 2 bad.err | tr '\n' ' ')"; return; fi
    if ! grep -qF -- "$want" bad.err; then fail "$name" "stderr does not name '$want': $(head -n 2 bad.err | tr '\n' ' ')"; return; fi
    if [ -e runs/bad ] || [ -e ck_bad ]; then fail "$name" "something was written"; return; fi
    pass "$name"
}
row_bad_config() {
    current_row=bad_config
    printf '{"data": {"train": "data"}, "training": {"epoch": 2}}\n' >unknown_nested.json
    printf '{"data": {"train": "data", "augmentation": {"flip": "often"}}}\n' >wrong_type.json
    printf '{"data": {"train": "data"},}\n' >trailing_comma.json
    bad unknown_key 2 "training.epoch: unknown key 'epoch' (did you mean 'epochs'?)" --config unknown_nested.json
    bad unknown_key_set 2 "checkpoint.keep: unknown key" --config tiny.json --set checkpoint.keep=2
    bad wrong_type 2 "data.augmentation.flip: expected a number" --config wrong_type.json
    bad wrong_type_set 2 "data.augment: expected true or false" --config tiny.json --set data.augment=yes
    bad not_json 2 "not valid JSON" --config trailing_comma.json
    bad negative_batch 2 "training.global_batch: must be positive, got -6" --config tiny.json --set training.global_batch=-6
    bad negative_embedding 2 "model.embedding_size: must be positive" --config tiny.json --set model.embedding_size=-512
    bad negative_keep_last 2 "checkpoint.keep_last: must be positive" --config tiny.json --set checkpoint.keep_last=-1
    bad batch_not_divisible_4 4 "training.global_batch: 6 is not divisible by the world size 4" --config tiny.json
    bad batch_not_divisible_3 3 "training.global_batch: 8 is not divisible by the world size 3" --config tiny.json --set training.global_batch=8
    bad batch_one_per_rank 3 "training.global_batch: 3 over 3 ranks leaves 1 sample per rank" --config tiny.json --set training.global_batch=3
    bad missing_data 2 "data.train: no such file or directory: no/such/data" --config tiny.json --set data.train=no/such/data
    bad classes_below_labels 2 "data.num_classes: 4 is smaller than the 16 classes" --config tiny.json --set data.num_classes=4
    bad missing_config_file 2 "no/such.json" --config no/such.json
    bad unknown_option 2 "Unknown option '--resme'" --config tiny.json --resme auto
    bad missing_config_option 2 "Missing expected argument '--config <file>'"
    bad resume_missing_directory 2 "--resume: no checkpoint directory at no/such/step-000000002" --config tiny.json --resume no/such/step-000000002
    bad malformed_set 2 "--set foo: expected key=value" --config tiny.json --set foo
    ADAFACE_DIST_INJECT_NONFINITE=loss bad malformed_test_hook 2 "ADAFACE_DIST_INJECT_NONFINITE: 'loss'" --config tiny.json
    note "$(( ${row_pass[bad_config]:-0} + ${row_fail[bad_config]:-0} )) cases under mpirun -n 2, 3 or 4: exit 2, the field on stderr, no run or checkpoint folder"
}

# --- NaN and Inf ---------------------------------------------------------------------------------------
# nonfinite_skip NAME INJECTION: steps 1-3 with a checkpoint every step; step 3 must be skipped on every
# rank, counted, and leave the model exactly as step 2 left it.
nonfinite_skip() {
    local name=$1 run=runs/$1
    if ! ADAFACE_DIST_INJECT_NONFINITE=$2 train 2 "$name.log" --set run_dir="$run" --set training.max_steps=3 \
        --set checkpoint.every_steps=1; then
        fail "$name" "the run failed: $(last_lines "$name.log")"; return
    fi
    local s2=$run/checkpoints/step-000000002 s3=$run/checkpoints/step-000000003
    if ! grep -q "^step 3: non-finite loss or gradient, step skipped (1 so far)" "$name.log"; then
        fail "$name" "step 3 was not skipped: $(last_lines "$name.log")"; return
    fi
    if ! grep -q '"step":3,.*"skipped":true' "$run/metrics/rank-00000.jsonl" || ! grep -q '"step":3,.*"skipped":true' "$run/metrics/rank-00001.jsonl" ||
        ! grep -q '"skipped_nonfinite_steps" *: *1' "$s3/trainer_state.json"; then
        fail "$name" "the skip is not counted on every rank and in the checkpoint"; return
    fi
    # Only the position and the counter may differ: weights, momentum, BatchNorm statistics, head and
    # norm EMA are step 2's.
    "${compare[@]}" "$s2" "$s3" >"$name.cmp" 2>&1
    if grep -vE '^(trainer_state: (global_step|epoch_samples_consumed|samples_seen|counters|learning_rate bits)|DIFFERENT)' "$name.cmp" | grep -q .; then
        fail "$name" "the skipped step changed the model: $(head -n 3 "$name.cmp" | tr '\n' ' ')"; return
    fi
    pass "$name"
}
# nonfinite_stop NAME INJECTION EXPECTED [train arguments...]: exit 1 with EXPECTED, step 2 the newest
# checkpoint, nothing of step 3 on disk.
nonfinite_stop() {
    local name=$1 run=runs/$1 inject=$2 want=$3 rc=0
    shift 3
    ADAFACE_DIST_INJECT_NONFINITE=$inject train 2 "$name.log" --set run_dir="$run" --set training.max_steps=4 \
        --set checkpoint.every_steps=1 "$@" || rc=$?
    if [ $rc -ne 1 ]; then fail "$name" "exit code $rc, want 1: $(last_lines "$name.log")"; return; fi
    if ! grep -qF -- "$want" "$name.log"; then fail "$name" "no '$want': $(last_lines "$name.log")"; return; fi
    if [ "$(newest_valid "$run/checkpoints")" != "$run/checkpoints/step-000000002" ] || compgen -G "$run/checkpoints/*step-000000003*" >/dev/null; then
        fail "$name" "step 2 is not the newest checkpoint, or step 3 left something: $(ls -a "$run/checkpoints" | tr '\n' ' ')"; return
    fi
    echo "  $name: $(grep -m1 '^Error' "$name.log" | cut -c1-180)"
    pass "$name"
}
row_nonfinite() {
    current_row=nonfinite
    nonfinite_skip loss_skipped loss@3
    nonfinite_skip gradient_skipped gradient@3:1
    nonfinite_stop loss_abort loss@3:1 "step 3: non-finite loss or gradient (training.nonfinite = abort)" --set training.nonfinite=abort
    if [ $quick = 0 ]; then
        nonfinite_stop gradient_abort gradient@3 "step 3: non-finite loss or gradient (training.nonfinite = abort)" --set training.nonfinite=abort
        nonfinite_stop too_many_skipped loss@2:0,loss@3:1 "2 steps skipped for non-finite values, more than training.max_skipped_steps = 1" \
            --set training.max_skipped_steps=1
    fi
    nonfinite_stop weight_refused_by_writer weight@3:0,weight@3:1 "backbone tensor 'input_layer.0.weight' holds 1 non-finite values"
    nonfinite_stop weight_on_one_replica weight@3:1 "the ranks' backbone parameters differ"
    # No checkpoint written anywhere in this row holds a non-finite value.
    local dirs
    dirs=$(ls -d runs/*_skipped/checkpoints/step-* runs/*_abort/checkpoints/step-* runs/too_many_skipped/checkpoints/step-* \
        runs/weight_*/checkpoints/step-* 2>/dev/null)
    if [ -n "$dirs" ] && "${tools[@]}" scan-finite $dirs >scan.txt 2>&1; then
        echo "  scan: $(tail -n 1 scan.txt)"
        pass no_checkpoint_holds_nan_or_inf
    else
        fail no_checkpoint_holds_nan_or_inf "$(head -n 3 scan.txt 2>/dev/null | tr '\n' ' ')"
    fi
    note "loss and gradient skipped without a trace, abort$([ $quick = 0 ] && echo ' (loss and gradient), max_skipped_steps'), NaN weight refused by the writer or caught as a replica mismatch; every checkpoint scanned finite"
}

# --- Resume at another rank count after a crash -----------------------------------------------------
# crash_then_repartition NAME FROM_RANKS TO_RANKS: kill -9 during the checkpoint write of step 4 at
# FROM_RANKS, then at TO_RANKS: the newest complete checkpoint reloaded and written back (no step)
# must equal it bit for bit, and training must go on to the end.
crash_then_repartition() {
    local name=$1 p=$2 q=$3 run=runs/$1
    start "$p" "$name.log" --set run_dir="$run"
    if ! wait_for "$RUN_TIMEOUT" writing_or_written "$run/checkpoints" 4; then
        kill -9 "$MPIRUN" 2>/dev/null; fail "$name" "no checkpoint write of step 4: $(last_lines "$name.log")"; return
    fi
    kill -9 "$(rank_pid "$MPIRUN" $((p - 1)))"
    local rc=0
    wait_exit "$MPIRUN" "$PROMPT_EXIT" || rc=$?
    if [ $rc -eq 0 ] || [ $rc -eq 124 ]; then fail "$name" "exit code $rc after kill -9"; return; fi
    local newest step
    newest=$(newest_valid "$run/checkpoints")
    if [ -z "$newest" ]; then fail "$name" "no complete checkpoint after the crash"; return; fi
    step=$(step_of "$newest")
    rm -rf "pristine_$name" && mkdir "pristine_$name" && cp -r "$newest" "pristine_$name/"
    if ! train "$q" "$name.reload.log" --set run_dir="$run" --set training.max_steps="$step" --resume auto ||
        ! grep -q "^resumed from $newest (step $step, epoch 0, saved by $p rank(s))" "$name.reload.log"; then
        fail "$name" "the reload at $q ranks failed: $(last_lines "$name.reload.log")"; return
    fi
    local written
    written=$(checkpoint_in_log "$name.reload.log" "end of training")
    if [ ! -f "$written/head-rank00000-of-0000$q.safetensors" ] || ! identical "pristine_$name/$(basename "$newest")" "$written" "$name.cmp"; then
        fail "$name" "the re-partitioned checkpoint differs: $(head -n 3 "$name.cmp" | tr '\n' ' ')"; return
    fi
    pass "${name}_exact"
    [ $quick = 1 ] && { rm -rf "$run"; return; }
    if train "$q" "$name.continue.log" --set run_dir="$run" --resume auto && grep -qE "^done: $((STEPS - step)) steps" "$name.continue.log"; then
        echo "  $name: crashed at $p ranks during the write of step 4, newest complete step $step; reloaded at $q ranks bit-identical, trained on to step $STEPS"
        pass "${name}_continues"
    else
        fail "${name}_continues" "$(last_lines "$name.continue.log")"
    fi
    rm -rf "$run"
}
row_repartition() {
    current_row=repartition
    crash_then_repartition crash_2_resume_3 2 3
    [ $quick = 0 ] && crash_then_repartition crash_3_resume_2 3 2
    note "kill -9 during a checkpoint write, then --resume auto at another rank count: head (and everything else) bit-identical$([ $quick = 0 ] && echo '; 2→3 and 3→2, each trained on to the end' || echo '; 2→3')"
}

# --- A node lost (delegated) -------------------------------------------------------------------------
row_node_loss() {
    current_row=node_loss
    if [ ! -f "$repo/Scripts/fault_node_loss.sh" ]; then
        echo "SKIP node_loss: Scripts/fault_node_loss.sh is not there"; note "skipped: script absent"; return
    fi
    ADAFACE_BIN=$bin bash "$repo/Scripts/fault_node_loss.sh" 2>&1 | tee node_loss.log
    local line
    line=$(grep -E "^[0-9]+ passed, [0-9]+ failed" node_loss.log | tail -n 1)
    if [ -z "$line" ]; then fail summary "Scripts/fault_node_loss.sh ended without 'N passed, N failed'"; return; fi
    local p f
    p=$(sed -E 's/^([0-9]+) passed.*/\1/' <<<"$line")
    f=$(sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/' <<<"$line")
    passed=$((passed + p)); failed=$((failed + f))
    row_pass[node_loss]=$p; row_fail[node_loss]=$f
    note "Scripts/fault_node_loss.sh: $line"
}

# --- Run ---------------------------------------------------------------------------------------------
rows=(bad_config kill9 signal damaged disk_full bad_data nonfinite repartition node_loss)
for row in "${rows[@]}"; do
    wanted "$row" || continue
    t=$SECONDS
    echo "==> $row"
    "row_$row"
    echo "    ($((SECONDS - t)) s)"
    row_note[$row]="${row_note[$row]:-} [$((SECONDS - t)) s]"
done

echo
printf '%-12s %6s %6s  %s\n' row passed failed notes
for row in "${rows[@]}"; do
    wanted "$row" || continue
    printf '%-12s %6s %6s  %s\n' "$row" "${row_pass[$row]:-0}" "${row_fail[$row]:-0}" "${row_note[$row]:-}"
done
echo "($((SECONDS - started)) s, seed $SEED)"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
