#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds, runs the single-process tests (`swift test`),
# the multi-rank tests under mpirun with 1, 2, 3 and 4 ranks, the trainer's end-to-end tests
# (Scripts/trainer_tests.sh), the cluster tests (Scripts/cluster_tests.sh) and the fault-injection
# suite in quick mode (Scripts/faults.sh --quick). Ends with `TOTAL: N passed, N failed`.
set -uo pipefail
cd "$(dirname "$0")/.."
bash Scripts/setup.sh --tests || { echo "TOTAL: 0 passed, 1 failed"; exit 1; }

passed=0
failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# add_summary NAME: adds the `N passed, N failed` line of $log to the totals (a missing line is a failure).
add_summary() {
    local line
    line=$(grep -E "^[0-9]+ passed, [0-9]+ failed" "$log" | tail -n 1)
    if [ -n "$line" ]; then
        passed=$((passed + $(sed -E 's/^([0-9]+) passed.*/\1/' <<<"$line")))
        failed=$((failed + $(sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/' <<<"$line")))
    else
        echo "$1 ended without a summary"
        failed=$((failed + 1))
    fi
}

echo "==> swift test"
swift test -c release --skip-build 2>&1 | tee "$log"
summary=$(grep -E "^[[:space:]]*Executed [0-9]+ tests?, with [0-9]+ failures?" "$log" | tail -n 1)
if [ -n "$summary" ]; then
    executed=$(sed -E 's/.*Executed ([0-9]+) tests?.*/\1/' <<<"$summary")
    failures=$(sed -E 's/.*with ([0-9]+) failures?.*/\1/' <<<"$summary")
    passed=$((passed + executed - failures))
    failed=$((failed + failures))
else
    echo "swift test printed no summary"
    failed=$((failed + 1))
fi

# Ranks share the cores: one OpenBLAS thread each, and --oversubscribe for 3 and 4 ranks on 2 cores.
mpi_flags=(--oversubscribe)
[ "$(id -u)" -eq 0 ] && mpi_flags+=(--allow-run-as-root)
for ranks in 1 2 3 4; do
    echo "==> mpirun -n $ranks adaface-dist-mpi-tests"
    OPENBLAS_NUM_THREADS=1 timeout 900 mpirun "${mpi_flags[@]}" -n "$ranks" \
        .build/release/adaface-dist-mpi-tests 2>&1 | tee "$log"
    add_summary "the $ranks-rank run"
done

# The trainer end to end through mpirun: exact resume, re-partitioning, signals, kill -9, bad configs.
echo "==> Scripts/trainer_tests.sh"
bash Scripts/trainer_tests.sh 2>&1 | tee "$log"
add_summary "the trainer tests"

# The Slurm template (syntax, dry run, requeue on USR1) and the multi-host harness: training across
# network-namespace hosts over TCP, teardown after a killed rank.
echo "==> Scripts/cluster_tests.sh"
bash Scripts/cluster_tests.sh 2>&1 | tee "$log"
add_summary "the cluster tests"

# Fault injection, quick mode (docs/reliability.md): kill -9 trials, preemption signals, damaged
# checkpoints, a full disk, corrupt data, bad configurations, NaN/Inf, re-partitioning after a crash,
# and a node lost from the namespace harness.
echo "==> Scripts/faults.sh --quick"
bash Scripts/faults.sh --quick 2>&1 | tee "$log"
add_summary "the fault-injection suite"

echo "TOTAL: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
