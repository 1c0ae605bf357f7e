#!/usr/bin/env bash
# mpirun across the hosts of cluster/local/netns.sh: writes the hostfile, starts the daemons in the
# hosts' namespaces through rsh-agent.sh, and keeps every byte between ranks on TCP over the bridge.
#
#   cluster/local/mpirun.sh [-n RANKS] [--slots S] [--print] [mpirun options...] -- PROGRAM [ARGS...]
#
# --slots S   ranks each host may run (default 1); -n defaults to hosts × S.
# --print     print the mpirun command line instead of running it.
# Other options before `--` go to mpirun as they are (e.g. -x VAR, --map-by, --timeout). Added:
#   --hostfile RUN_DIR/hostfile (one line per host: ADDRESS slots=S)
#   --mca plm_rsh_agent rsh-agent.sh --mca plm_rsh_no_tree_spawn 1   daemons started by mpirun itself
#   --mca orte_leave_session_attached 1   each daemon stays the child of its agent, so that an
#        agent that gives up on an unreachable host (its lifeline, see rsh-agent.sh) ends the job
#   --mca oob_tcp_if_include SUBNET --mca btl_tcp_if_include SUBNET  only the harness subnet
#   --mca pml ob1 --mca btl self,tcp --mca osc ^ucx                  no shared memory, no UCX
#   --bind-to none (the hosts share this machine's cores; give --bind-to to override)
#   --allow-run-as-root as root; NETNS_STATE exported for the agent.
# Same settings as netns.sh (NETNS_PREFIX, NETNS_SUBNET, NETNS_RUN_DIR).
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
prefix=${NETNS_PREFIX:-adfn}
run_dir=${NETNS_RUN_DIR:-${TMPDIR:-/tmp}/adaface-netns-$prefix}
state=$run_dir/state
die() { echo "mpirun.sh: $*" >&2; exit 2; }

[ -s "$state" ] || die "no harness is up (no state at $state): run cluster/local/netns.sh up N"
subnet=$(awk '$1 == "bridge" { print $4; exit }' "$state")
mapfile -t addresses < <(awk '$1 == "host" { print $3 }' "$state")
[ ${#addresses[@]} -gt 0 ] && [ -n "$subnet" ] || die "the state file $state names no hosts"

ranks="" slots=1 print=0 bind=1
mpi_args=()
program=()
while [ $# -gt 0 ]; do
    case $1 in
        -n|-np|--np|-c) ranks=${2:-}; shift 2 || die "$1 needs a value" ;;
        --slots) slots=${2:-}; shift 2 || die "--slots needs a value" ;;
        --print) print=1; shift ;;
        --bind-to) bind=0; mpi_args+=("$1" "${2:-}"); shift 2 || die "--bind-to needs a value" ;;
        --) shift; program=("$@"); break ;;
        *) mpi_args+=("$1"); shift ;;
    esac
done
if [ ${#program[@]} -eq 0 ]; then
    # No `--`: mpirun itself tells its options from the program.
    program=("${mpi_args[@]}")
    mpi_args=()
fi
[ ${#program[@]} -gt 0 ] || die "usage: mpirun.sh [-n RANKS] [--slots S] [mpirun options...] -- PROGRAM [ARGS...]"
[[ $slots =~ ^[1-9][0-9]*$ ]] || die "--slots must be a positive integer"
[ -n "$ranks" ] || ranks=$((${#addresses[@]} * slots))
[[ $ranks =~ ^[1-9][0-9]*$ ]] || die "-n must be a positive integer"

agent=$here/rsh-agent.sh
[ -f "$agent" ] || die "no $agent"
if [ ! -x "$agent" ] || [[ $agent == *" "* ]]; then
    # Open MPI needs an executable path without spaces: use a copy in the run folder.
    cp "$agent" "$run_dir/rsh-agent.sh" && chmod +x "$run_dir/rsh-agent.sh" || die "cannot copy the agent to $run_dir"
    agent=$run_dir/rsh-agent.sh
fi
[[ $agent != *" "* ]] || die "the agent path '$agent' contains a space, which Open MPI's plm_rsh_agent cannot take"

hostfile=$run_dir/hostfile
: >"$hostfile" || die "cannot write $hostfile"
for a in "${addresses[@]}"; do echo "$a slots=$slots" >>"$hostfile"; done

cmd=(mpirun --hostfile "$hostfile" -n "$ranks"
    --mca plm_rsh_agent "$agent" --mca plm_rsh_no_tree_spawn 1 --mca orte_leave_session_attached 1
    --mca oob_tcp_if_include "$subnet" --mca btl_tcp_if_include "$subnet"
    --mca pml ob1 --mca btl self,tcp --mca osc ^ucx)
[ $bind = 1 ] && cmd+=(--bind-to none)
[ "$(id -u)" -eq 0 ] && cmd+=(--allow-run-as-root)
cmd+=("${mpi_args[@]}" "${program[@]}")

export NETNS_STATE=$state
if [ $print = 1 ]; then
    out=()
    for word in "${cmd[@]}"; do
        if [[ $word =~ ^[A-Za-z0-9_./=:,@%+^-]+$ ]]; then out+=("$word"); else out+=("$(printf '%q' "$word")"); fi
    done
    echo "${out[*]}"
    exit 0
fi
exec "${cmd[@]}"
