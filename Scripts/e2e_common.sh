# Sourced by the end-to-end test scripts (trainer_tests, cluster_tests, faults, fault_node_loss):
# the PASS/FAIL counters, the mpirun flags, the binary check, and the tiny synthetic set and
# training configuration they all run on.

export OPENBLAS_NUM_THREADS=1
mpi_flags=(--oversubscribe)
[ "$(id -u)" -eq 0 ] && mpi_flags+=(--allow-run-as-root)

passed=0
failed=0
pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1: $2"; failed=$((failed + 1)); }

# require_binary PATH: a FAIL line, the summary and exit 1 when PATH is not an executable.
require_binary() {
    if [ ! -x "$1" ]; then
        echo "FAIL setup: no binary at $1 (swift build -c release)"
        echo "0 passed, 1 failed"
        exit 1
    fi
}

# make_tiny_set BIN: `data` in the current folder, 64 images of 16 identities (a global batch of 6
# splits over 2 and 3 ranks: 10 steps per epoch). On failure: a FAIL line, the summary, exit 1.
make_tiny_set() {
    if ! "$1" synth --out data --identities 16 --images-per-identity 4 --pairs 20 >synth.log 2>&1; then
        echo "FAIL setup: synth failed: $(tail -n 3 synth.log)"
        echo "0 passed, 1 failed"
        exit 1
    fi
}

# write_tiny_config FILE TRAINING CHECKPOINT: IR-18 on that set, one thread per rank; TRAINING adds
# fields to the training section (e.g. '"epochs": 2'), CHECKPOINT is the checkpoint section's fields.
write_tiny_config() {
    cat >"$1" <<EOF
{
  "name": "tiny", "seed": 7, "run_dir": "runs/tiny",
  "model": {"arch": "ir18", "embedding_size": 512, "dropout": 0.4},
  "data": {"train": "data", "loader_threads": 1},
  "optimizer": {"lr": 0.1, "reference_batch": 64, "schedule": {"type": "poly", "milestones": [], "warmup_epochs": 0.5}},
  "training": {$2, "global_batch": 6, "threads": 1, "log_every": 1, "timeout_seconds": 60},
  "checkpoint": {$3},
  "validation": {"bins": []}
}
EOF
}
