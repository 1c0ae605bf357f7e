#!/usr/bin/env bash
# The main job on its embedded default: installs what is missing, builds, makes a synthetic face data
# set (once) and trains IR-18 with the AdaFace loss on 2 MPI ranks. Extra arguments go to
# `adaface-dist train` (for example --set training.epochs=1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash Scripts/setup.sh
binary=.build/release/adaface-dist
if [ ! -f data/synth/train.idx ] || [ ! -f data/synth/val.bin ]; then
    "$binary" synth --out data/synth --identities 128 --images-per-identity 10 --pairs 200 --seed 1
fi
mpi_flags=(--oversubscribe)
[ "$(id -u)" -eq 0 ] && mpi_flags+=(--allow-run-as-root)
exec mpirun "${mpi_flags[@]}" -n 2 "$binary" train --config configs/synth_small.json "$@"
