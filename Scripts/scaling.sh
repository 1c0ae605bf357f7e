#!/usr/bin/env bash
# Strong and weak scaling of the trainer: P = 1, 2, 4 ranks, IR-18 and IR-50, the full softmax and
# Partial FC (0.1), with the head sized for WebFace4M (205,990 classes) on synthetic images. Every run
# is the real `adaface-dist train` for a few steps; the per-step time split comes from the ranks'
# metrics files and the peak memory of each rank from its rusage. Writes a CSV and a PNG plot.
#
#   strong: the global batch stays at --strong-batch (default 64); each rank gets 64/P.
#   weak:   each rank keeps --weak-batch (default 32); the global batch grows to 32·P.
#
# Every rank runs one compute thread, so P ranks want P cores: on a machine with fewer cores the
# efficiency is measured against the cores that exist (see Scripts/scaling_report.py).
#
# Usage: bash Scripts/scaling.sh [--out DIR] [--archs ir18,ir50] [--heads full,pfc] [--ranks 1,2,4]
#                                [--modes strong,weak] [--steps 3] [--classes 205990]
#                                [--hosts local|netns] [--rate 10gbit] [--delay 50us] [--smoke]
#   --hosts netns runs the ranks on the network-namespace hosts of cluster/local (one host per rank,
#   TCP only, no shared memory); --rate and --delay shape their links (tc).
#   --smoke is a one-minute check of the script itself: IR-18, 1,000 classes, P = 1, 2, strong only.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${ADAFACE_BIN:-$repo/.build/release/adaface-dist}

out=runs/scaling
archs=ir18,ir50
heads=full,pfc
ranks_list=1,2,4
modes=strong,weak
steps=3
classes=205990
strong_batch=64
weak_batch=32
hosts=local
link_rate=""
link_delay=""
while [ $# -gt 0 ]; do
    case $1 in
        --out) out=$2; shift 2 ;;
        --archs) archs=$2; shift 2 ;;
        --heads) heads=$2; shift 2 ;;
        --ranks) ranks_list=$2; shift 2 ;;
        --modes) modes=$2; shift 2 ;;
        --steps) steps=$2; shift 2 ;;
        --classes) classes=$2; shift 2 ;;
        --strong-batch) strong_batch=$2; shift 2 ;;
        --weak-batch) weak_batch=$2; shift 2 ;;
        --hosts) hosts=$2; shift 2 ;;
        --rate) link_rate=$2; shift 2 ;;
        --delay) link_delay=$2; shift 2 ;;
        --smoke) archs=ir18; heads=full; ranks_list=1,2; modes=strong; steps=2; classes=1000; strong_batch=8
                 out=${out%/}-smoke; shift ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "scaling.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
case $hosts in local|netns) ;; *) echo "scaling.sh: --hosts must be local or netns, got '$hosts'" >&2; exit 2 ;; esac
for n in "$steps" "$classes" "$strong_batch" "$weak_batch"; do
    [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "scaling.sh: sizes and counts must be positive integers, got '$n'" >&2; exit 2; }
done
if [ ! -x "$bin" ]; then
    echo "scaling.sh: building (no binary at $bin)"
    (cd "$repo" && swift build -c release) || exit 1
fi

mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$out" || exit 1
mpi_flags=(--oversubscribe)
[ "$(id -u)" -eq 0 ] && mpi_flags+=(--allow-run-as-root)
export OPENBLAS_NUM_THREADS=1
# The study's own namespace hosts, apart from any other harness on the machine.
export NETNS_PREFIX=${NETNS_PREFIX:-adfscale} NETNS_SUBNET=${NETNS_SUBNET:-10.214.0.0/24}

netns_up=0
teardown() { [ "$netns_up" = 1 ] && bash "$repo/cluster/local/netns.sh" down >/dev/null 2>&1; }
trap teardown EXIT

# Synthetic faces, enough for one weak-scaling global batch at the largest P.
max_ranks=$(tr ',' '\n' <<<"$ranks_list" | sort -n | tail -n 1)
need=$((weak_batch * max_ranks > strong_batch ? weak_batch * max_ranks : strong_batch))
identities=$(((need + 3) / 4 * 2))
if [ ! -f data/train.idx ] || [ "$(cat data/.images 2>/dev/null)" -lt "$need" ] 2>/dev/null; then
    echo "==> synthetic data: $identities identities × 4 images"
    rm -rf data
    "$bin" synth --out data --identities "$identities" --images-per-identity 4 --pairs 20 --seed 3 >synth.log 2>&1 \
        || { echo "synth failed: $(tail -n 3 synth.log)"; exit 1; }
    echo $((identities * 4)) >data/.images
fi

# One run: mode arch head ranks → runs/<tag>/ with metrics, log and per-rank peak memory.
run_one() {
    local mode=$1 arch=$2 head=$3 p=$4
    local tag="$mode-$arch-$head-p$p" rate=1.0 batch
    [ "$hosts" = netns ] && tag="$tag-netns"
    [ "$head" = pfc ] && rate=0.1
    if [ "$mode" = strong ]; then batch=$strong_batch; else batch=$((weak_batch * p)); fi
    if [ $((batch % p)) -ne 0 ] || [ $((batch / p)) -lt 2 ]; then
        echo "skip $tag: global batch $batch does not split into $p ranks of at least 2"
        return 0
    fi
    rm -rf "runs/$tag"
    mkdir -p "runs/$tag"
    cat >"runs/$tag/config.json" <<EOF
{
  "name": "$tag", "seed": 1, "run_dir": "runs/$tag",
  "description": "scaling study: $mode scaling, $arch, $head softmax, $p rank(s)",
  "model": {"arch": "$arch"},
  "head": {"sample_rate": $rate},
  "data": {"train": "data", "num_classes": $classes, "loader_threads": 1},
  "training": {"epochs": 1000, "global_batch": $batch, "threads": 1, "log_every": 1, "max_steps": $((steps + 1)),
               "timeout_seconds": 1800, "verify_parameters_every": 0},
  "checkpoint": {"dir": "runs/$tag/checkpoints", "every_steps": 0, "at_epoch_end": false, "keep_last": 1},
  "validation": {"bins": []}
}
EOF
    # Each rank runs under a small wrapper that reports its peak resident memory when it ends.
    local rank_cmd=(python3 -c 'import os, resource, subprocess, sys
code = subprocess.call(sys.argv[1:])
rank = os.environ.get("OMPI_COMM_WORLD_RANK", "0")
with open(os.environ["SCALING_RSS"] + "/rss-rank" + rank, "w") as f:
    f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024) + "\n")
sys.exit(code)' "$bin" train --config "runs/$tag/config.json" --resume none)
    local launcher=(mpirun "${mpi_flags[@]}" -x OPENBLAS_NUM_THREADS -x SCALING_RSS -n "$p")
    [ "$hosts" = netns ] && launcher=(bash "$repo/cluster/local/mpirun.sh" -x OPENBLAS_NUM_THREADS -x SCALING_RSS -n "$p" --)
    echo "==> $tag: global batch $batch ($((batch / p)) per rank), $classes classes, sample rate $rate, $((steps + 1)) steps"
    local started=$SECONDS
    if ! SCALING_RSS="$out/runs/$tag" "${launcher[@]}" "${rank_cmd[@]}" >"runs/$tag/train.log" 2>&1; then
        echo "FAILED $tag (see $out/runs/$tag/train.log):"
        tail -n 5 "runs/$tag/train.log"
        return 1
    fi
    grep -E "^epoch [0-9]+ step $((steps + 1))/" "runs/$tag/train.log" | sed 's/^/    /'
    echo "    $((SECONDS - started)) s"
    # The final checkpoint is not part of the study; the head alone is ~0.8 GB at 205,990 classes.
    rm -rf "runs/$tag/checkpoints"
    echo "$mode $arch $head $rate $p $batch $hosts $classes" >"runs/$tag/run.txt"
}

if [ "$hosts" = netns ]; then
    bash "$repo/cluster/local/netns.sh" up "$max_ranks" ${link_rate:+--rate "$link_rate"} ${link_delay:+--delay "$link_delay"} || exit 1
    netns_up=1
fi

failures=0
IFS=, read -ra mode_list <<<"$modes"
IFS=, read -ra arch_list <<<"$archs"
IFS=, read -ra head_list <<<"$heads"
IFS=, read -ra rank_counts <<<"$ranks_list"
for arch in "${arch_list[@]}"; do
    for head in "${head_list[@]}"; do
        for mode in "${mode_list[@]}"; do
            for p in "${rank_counts[@]}"; do
                run_one "$mode" "$arch" "$head" "$p" || failures=$((failures + 1))
            done
        done
    done
done

# One line per invocation, so that runs added to the same folder keep their commands.
{
    echo "machine: $(lscpu | sed -nE 's/^Model name: +//p'), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
    echo "command: bash Scripts/scaling.sh --archs $archs --heads $heads --ranks $ranks_list --modes $modes --steps $steps --classes $classes --hosts $hosts${link_rate:+ --rate $link_rate}${link_delay:+ --delay $link_delay}"
    echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
} >>machine.txt
python3 "$repo/Scripts/scaling_report.py" --runs runs --cores "$(nproc)" --csv scaling.csv --plot scaling.png || failures=$((failures + 1))
echo "wrote $out/scaling.csv and $out/scaling.png"
[ "$failures" -eq 0 ]
