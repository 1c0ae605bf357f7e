#!/usr/bin/env bash
# The main job on its embedded default: installs what is missing, builds, and runs the backbone
# benchmark (IR-18, batch 64, all cores). Extra arguments go to `adaface-dist bench backbone`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash Scripts/setup.sh
exec .build/release/adaface-dist bench backbone --arch ir18 --batch 64 --steps 3 "$@"
