#!/usr/bin/env bash
# N "hosts" on one machine: one Linux network namespace per host, each with its own address on one
# veth pair, all veths joined by a Linux bridge that also carries an address in the root namespace
# (where mpirun runs). Ranks placed on different hosts talk over TCP through the bridge, as ranks on
# different nodes do; cluster/local/mpirun.sh starts them there. Needs root (CAP_NET_ADMIN).
#
#   netns.sh up N [--rate 10gbit] [--delay 50us]   make N hosts (h1 … hN), optionally shaped
#   netns.sh down                                   kill what runs in them and remove what `up` made
#   netns.sh status                                 hosts, addresses, links, shaping, processes
#   netns.sh hosts                                  "NAME ADDRESS NAMESPACE" per host
#   netns.sh check                                  every host reaches the bridge and the other hosts
#   netns.sh cut HOST | restore HOST                take a host's link down / up again (fault tests)
#   netns.sh exec HOST COMMAND...                   run a command on a host
#   netns.sh pids HOST                              the processes running on a host
#   netns.sh traffic [--mark | --since-mark]        bytes each host sent and received
#
# HOST is h1 … hN, a host's address or its namespace name. Settings (environment):
#   NETNS_PREFIX   name prefix of every namespace and interface (default adfn; ≤ 8 of [a-z0-9])
#   NETNS_SUBNET   a free IPv4 /24 (default 10.213.0.0/24): .1 is the bridge, host i is .(i+1)
#   NETNS_RUN_DIR  where the state file and the hostfile go (default $TMPDIR/adaface-netns-PREFIX)
# `down` removes exactly the objects recorded in the state file by `up`; nothing else is touched.
set -uo pipefail

PREFIX=${NETNS_PREFIX:-adfn}
SUBNET=${NETNS_SUBNET:-10.213.0.0/24}
RUN_DIR=${NETNS_RUN_DIR:-${TMPDIR:-/tmp}/adaface-netns-$PREFIX}
STATE=$RUN_DIR/state

die() { echo "netns.sh: $*" >&2; exit 1; }
note() { echo "netns.sh: $*" >&2; }

[[ $PREFIX =~ ^[a-z][a-z0-9]{0,7}$ ]] || die "NETNS_PREFIX must be 1-8 characters [a-z0-9] starting with a letter, got '$PREFIX'"
[[ $SUBNET =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.0/24$ ]] || die "NETNS_SUBNET must be an IPv4 /24 like 10.213.0.0/24, got '$SUBNET'"
NET=${SUBNET%.0/24}
BRIDGE=$PREFIX-br
BRIDGE_ADDR=$NET.1

# --- state ---------------------------------------------------------------------------------------
# Lines of $STATE:
#   created netns NAME | created link NAME     every object `up` made, in creation order
#   host NAME ADDRESS NAMESPACE ROOT_VETH      one per host (the host's own end is eth0 inside it)
#   bridge NAME ADDRESS SUBNET | shaping TEXT  for status and for mpirun.sh
record() { echo "$*" >>"$STATE"; }
have_state() { [ -s "$STATE" ]; }
hosts_in_state() { awk '$1 == "host" { print $2, $3, $4, $5 }' "$STATE"; }

# resolve HOST → "NAME ADDRESS NAMESPACE ROOT_VETH", or exit.
resolve() {
    have_state || die "no harness is up (no state file at $STATE)"
    local line
    line=$(awk -v h="$1" '$1 == "host" && ($2 == h || $3 == h || $4 == h) { print $2, $3, $4, $5; exit }' "$STATE")
    [ -n "$line" ] || die "no host '$1' (hosts: $(awk '$1 == "host" { printf "%s ", $2 }' "$STATE"))"
    echo "$line"
}

need_root() {
    command -v ip >/dev/null || die "the ip command (iproute2) is missing"
    [ "$(id -u)" -eq 0 ] || die "needs root (CAP_NET_ADMIN) to make network namespaces"
}

# reaches NAMESPACE|"" ADDRESS → 0 when a TCP connection to ADDRESS (port 9) is accepted or refused:
# either way a packet came back from that address. A timeout or "no route" means unreachable.
reaches() {
    local out
    if [ -n "$1" ]; then
        out=$(ip netns exec "$1" timeout 3 bash -c "exec 3<>/dev/tcp/$2/9" 2>&1) && return 0
    else
        out=$(timeout 3 bash -c "exec 3<>/dev/tcp/$2/9" 2>&1) && return 0
    fi
    [[ $out == *"refused"* ]]
}

# --- shaping -------------------------------------------------------------------------------------
# rate_bytes RATE → bytes per second of a tc rate such as 10gbit, 500mbit, 100kbit.
rate_bytes() {
    local r=${1,,}
    [[ $r =~ ^([0-9]+(\.[0-9]+)?)(bit|kbit|mbit|gbit|tbit)$ ]] || return 1
    local mult
    case ${BASH_REMATCH[3]} in
        bit) mult=1 ;; kbit) mult=1000 ;; mbit) mult=1000000 ;; gbit) mult=1000000000 ;; tbit) mult=1000000000000 ;;
    esac
    awk -v v="${BASH_REMATCH[1]}" -v m="$mult" 'BEGIN { printf "%.0f\n", v * m / 8 }'
}

NETEM_OK=unknown
netem_available() {
    if [ "$NETEM_OK" = unknown ]; then
        # Probe on a throw-away dummy-free object: the bridge exists by now and is ours.
        if tc qdisc add dev "$BRIDGE" root netem delay 1us 2>/dev/null; then
            tc qdisc del dev "$BRIDGE" root 2>/dev/null
            NETEM_OK=yes
        else
            NETEM_OK=no
        fi
    fi
    [ "$NETEM_OK" = yes ]
}

# shape NAMESPACE|"" DEVICE RATE DELAY: RATE and DELAY may be empty.
shape() {
    local ns=$1 dev=$2 rate=$3 delay=$4 tcx=(tc)
    [ -n "$ns" ] && tcx=(ip netns exec "$ns" tc)
    if [ -n "$delay" ] && [ "$NETEM_OK" = yes ]; then
        local args=(delay "$delay" limit 100000)
        [ -n "$rate" ] && args+=(rate "$rate")
        "${tcx[@]}" qdisc add dev "$dev" root netem "${args[@]}" || return 1
    elif [ -n "$rate" ]; then
        # A token bucket: 2 ms worth of bytes (at least 64 KiB, one GSO packet), 50 ms of queue.
        local bps burst
        bps=$(rate_bytes "$rate") || return 1
        burst=$((bps / 500))
        [ "$burst" -lt 65536 ] && burst=65536
        "${tcx[@]}" qdisc add dev "$dev" root tbf rate "$rate" burst "$burst" latency 50ms || return 1
    fi
}

# --- commands ------------------------------------------------------------------------------------
cmd_up() {
    local n=${1:-}
    [[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 250 ] || die "usage: netns.sh up N [--rate RATE] [--delay DELAY] (1 ≤ N ≤ 250)"
    shift
    local rate="" delay=""
    while [ $# -gt 0 ]; do
        case $1 in
            --rate) rate=${2:-}; shift 2 || die "--rate needs a value" ;;
            --delay) delay=${2:-}; shift 2 || die "--delay needs a value" ;;
            *) die "unknown option '$1'" ;;
        esac
    done
    [ -z "$rate" ] || rate_bytes "$rate" >/dev/null || die "--rate '$rate': use a tc rate such as 10gbit, 500mbit, 100kbit"
    [ -z "$delay" ] || [[ $delay =~ ^[0-9]+(\.[0-9]+)?(us|ms|s)$ ]] || die "--delay '$delay': use a time such as 50us, 2ms"
    need_root
    if have_state; then
        die "a harness is already up with prefix $PREFIX (state: $STATE); run 'netns.sh down' first"
    fi
    # Refuse to reuse anything that exists already: we only ever remove what we made.
    ip link show "$BRIDGE" >/dev/null 2>&1 && die "an interface named $BRIDGE exists but is not recorded in $STATE; pick another NETNS_PREFIX"
    local i
    for ((i = 1; i <= n; i++)); do
        ip netns list | awk '{ print $1 }' | grep -qx "$PREFIX-h$i" && die "a namespace named $PREFIX-h$i exists but is not recorded in $STATE; pick another NETNS_PREFIX"
        ip link show "$PREFIX-h$i" >/dev/null 2>&1 && die "an interface named $PREFIX-h$i exists already; pick another NETNS_PREFIX"
    done
    if ip -4 -o addr show | awk '{ print $4 }' | grep -q "^${NET//./\\.}\."; then
        die "the root namespace already has an address in $SUBNET; set NETNS_SUBNET to a free /24"
    fi
    if [ -n "$(ip -4 route show "$SUBNET" 2>/dev/null)" ]; then
        die "the root namespace already routes $SUBNET; set NETNS_SUBNET to a free /24"
    fi
    ip netns add "$PREFIX-probe$$" 2>/dev/null || die "cannot make a network namespace here (ip netns add failed: no CAP_NET_ADMIN?)"
    ip netns del "$PREFIX-probe$$"

    mkdir -p "$RUN_DIR" || die "cannot make $RUN_DIR"
    : >"$STATE"
    # From here on a failure removes what was made so far.
    trap 'trap - ERR; set +E; note "up failed; removing what was made"; cmd_down >/dev/null; exit 1' ERR
    set -E
    ip link add "$BRIDGE" type bridge stp_state 0 forward_delay 0
    record created link "$BRIDGE"
    ip addr add "$BRIDGE_ADDR/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    record bridge "$BRIDGE" "$BRIDGE_ADDR" "$SUBNET"
    if [ -n "$delay" ] && ! netem_available; then
        note "warning: the kernel has no netem qdisc (sch_netem), so --delay $delay cannot be applied; the links get no added delay${rate:+ (the rate limit uses tbf)}"
    fi
    for ((i = 1; i <= n; i++)); do
        local ns=$PREFIX-h$i veth=$PREFIX-h$i peer=$PREFIX-h${i}n addr=$NET.$((i + 1))
        ip netns add "$ns"
        record created netns "$ns"
        ip link add "$veth" type veth peer name "$peer"
        record created link "$veth"
        ip link set "$peer" netns "$ns"
        ip -n "$ns" link set "$peer" name eth0
        ip link set "$veth" master "$BRIDGE"
        ip link set "$veth" up
        ip -n "$ns" link set lo up
        ip -n "$ns" addr add "$addr/24" dev eth0
        ip -n "$ns" link set eth0 up
        record host "h$i" "$addr" "$ns" "$veth"
        if [ -n "$rate$delay" ]; then
            # The host's upload (its own eth0) gets the delay and the rate, its download (the bridge
            # side) the rate: a full-duplex link; one way host → host crosses one delay.
            shape "$ns" eth0 "$rate" "$delay"
            [ -z "$rate" ] || shape "" "$veth" "$rate" ""
        fi
    done
    local shaping=none
    if [ -n "$rate$delay" ]; then
        if [ -n "$delay" ] && [ "$NETEM_OK" = yes ]; then
            shaping="netem${rate:+ rate $rate} delay $delay"
        elif [ -n "$rate" ]; then
            shaping="tbf rate $rate${delay:+ (delay $delay NOT applied: no netem)}"
        else
            shaping="none (delay $delay NOT applied: no netem)"
        fi
    fi
    record shaping "$shaping"
    trap - ERR
    set +E
    # Everything on one L2 bridge: no routing (ip_forward) is involved. A firewall on the root
    # namespace's INPUT chain, or br_netfilter with a FORWARD policy of DROP, would still block us.
    local bad=0
    for ((i = 1; i <= n; i++)); do
        local addr=$NET.$((i + 1)) ns=$PREFIX-h$i
        reaches "$ns" "$BRIDGE_ADDR" || { note "h$i cannot reach the bridge address $BRIDGE_ADDR"; bad=1; }
        reaches "" "$addr" || { note "the root namespace cannot reach h$i ($addr)"; bad=1; }
        if [ "$n" -gt 1 ]; then
            local j=$((i % n + 1))
            reaches "$ns" "$NET.$((j + 1))" || { note "h$i cannot reach h$j"; bad=1; }
        fi
    done
    if [ $bad = 1 ]; then
        note "the hosts are up but not all reachable: check iptables (INPUT) and br_netfilter (net.bridge.bridge-nf-call-iptables with a DROP FORWARD policy); 'netns.sh down' removes them"
        exit 1
    fi
    echo "up: $n host(s) on $SUBNET (bridge $BRIDGE at $BRIDGE_ADDR), shaping: $shaping; state in $STATE"
    hosts_in_state | awk '{ printf "  %s %s (namespace %s)\n", $1, $2, $3 }'
}

cmd_down() {
    if ! have_state; then
        echo "down: nothing to tear down (no state at $STATE)"
        rm -f "$STATE" "$RUN_DIR/hostfile" "$RUN_DIR/traffic.mark" "$RUN_DIR/rsh-agent.sh" 2>/dev/null
        rmdir "$RUN_DIR" 2>/dev/null
        return 0
    fi
    need_root
    local namespaces links ns link left=0
    namespaces=$(awk '$1 == "created" && $2 == "netns" { print $3 }' "$STATE")
    links=$(awk '$1 == "created" && $2 == "link" { print $3 }' "$STATE" | tac)
    # 1. Every process in our namespaces (orted, ranks, anything started with `exec`).
    local try
    for try in 1 2 3 4 5 6 7 8 9 10; do
        local pids=""
        for ns in $namespaces; do
            [ -e "/run/netns/$ns" ] || ip netns list | awk '{ print $1 }' | grep -qx "$ns" || continue
            pids+=" $(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')"
        done
        [ -z "${pids// /}" ] && break
        # shellcheck disable=SC2086
        kill -9 $pids 2>/dev/null
        sleep 0.3
    done
    # 2. The veths (their peers go with them), then the namespaces, then the bridge.
    for link in $links; do
        [ "$link" = "$BRIDGE" ] && continue
        ip link show "$link" >/dev/null 2>&1 && ip link del "$link"
    done
    for ns in $namespaces; do
        ip netns list | awk '{ print $1 }' | grep -qx "$ns" && ip netns del "$ns"
    done
    for link in $links; do
        [ "$link" = "$BRIDGE" ] || continue
        ip link show "$link" >/dev/null 2>&1 && ip link del "$link"
    done
    for ns in $namespaces; do
        if ip netns list | awk '{ print $1 }' | grep -qx "$ns"; then note "namespace $ns is still there"; left=1; fi
    done
    for link in $links; do
        if ip link show "$link" >/dev/null 2>&1; then note "interface $link is still there"; left=1; fi
    done
    if [ $left = 1 ]; then
        note "down incomplete; the state file is kept ($STATE): run down again"
        return 1
    fi
    # 3. Open MPI session folders of daemons that were killed (named after our hosts' host names).
    local dir
    for ns in $namespaces; do
        for dir in "${TMPDIR:-/tmp}/ompi.$ns."* "/tmp/ompi.$ns."*; do
            [[ -d $dir && ${dir##*/} =~ ^ompi\.$ns\.[0-9]+$ ]] && rm -rf "$dir"
        done
    done
    echo "down: removed $(echo $namespaces | wc -w) namespace(s) and $(echo $links | wc -w) interface(s) with prefix $PREFIX"
    rm -f "$STATE" "$RUN_DIR/hostfile" "$RUN_DIR/traffic.mark" "$RUN_DIR/rsh-agent.sh"
    rmdir "$RUN_DIR" 2>/dev/null
    return 0
}

cmd_status() {
    if ! have_state; then echo "down (no state at $STATE)"; return 0; fi
    awk '$1 == "bridge" { printf "bridge %s at %s, subnet %s\n", $2, $3, $4 } $1 == "shaping" { $1 = ""; printf "shaping:%s\n", $0 }' "$STATE"
    local name addr ns veth
    while read -r name addr ns veth; do
        local link="missing" procs
        if ip link show "$veth" >/dev/null 2>&1; then
            if ip link show "$veth" | grep -q "state UP"; then link=up; else link=DOWN; fi
        fi
        procs=$(ip netns pids "$ns" 2>/dev/null | wc -l)
        printf '%-4s %-15s namespace %-12s link %-4s (%s) processes %s\n' "$name" "$addr" "$ns" "$link" "$veth" "$procs"
        if [ "$procs" -gt 0 ]; then
            local pid
            for pid in $(ip netns pids "$ns" 2>/dev/null); do
                printf '       %7s %s\n' "$pid" "$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | cut -c1-100)"
            done
        fi
    done < <(hosts_in_state)
}

cmd_check() {
    have_state || die "no harness is up"
    local name addr ns veth bad=0 a2 n2 ns2 v2
    while read -r name addr ns veth; do
        if reaches "$ns" "$BRIDGE_ADDR"; then echo "ok   $name → bridge $BRIDGE_ADDR"; else echo "FAIL $name → bridge $BRIDGE_ADDR"; bad=1; fi
        while read -r n2 a2 ns2 v2; do
            [ "$n2" = "$name" ] && continue
            if reaches "$ns" "$a2"; then echo "ok   $name → $n2 $a2"; else echo "FAIL $name → $n2 $a2"; bad=1; fi
        done < <(hosts_in_state)
    done < <(hosts_in_state)
    return $bad
}

cmd_link() {
    local up=$1 host=${2:-}
    [ -n "$host" ] || die "usage: netns.sh cut|restore HOST"
    need_root
    local name addr ns veth line
    line=$(resolve "$host") || exit 1
    read -r name addr ns veth <<<"$line"
    if [ "$up" = up ]; then
        ip link set "$veth" up || return 1
        # The carrier and the bridge port come up asynchronously: wait until the host answers.
        local deadline=$((SECONDS + 10))
        until reaches "" "$addr" && reaches "$ns" "$BRIDGE_ADDR"; do
            [ $SECONDS -ge $deadline ] && { note "$name ($addr) does not answer 10 s after restore"; return 1; }
            sleep 0.2
        done
        echo "restored: $name ($addr) is connected again"
    else
        ip link set "$veth" down && echo "cut: $name ($addr) is disconnected (its veth $veth is down)"
    fi
}

cmd_traffic() {
    have_state || die "no harness is up"
    local mode=${1:-}
    local mark=$RUN_DIR/traffic.mark name addr ns veth
    # Bytes the host sent = bytes its bridge-side veth received, and the reverse.
    snapshot() {
        while read -r name addr ns veth; do
            local rx tx
            rx=$(cat "/sys/class/net/$veth/statistics/rx_bytes" 2>/dev/null || echo 0)
            tx=$(cat "/sys/class/net/$veth/statistics/tx_bytes" 2>/dev/null || echo 0)
            echo "$name $addr $rx $tx"
        done < <(hosts_in_state)
    }
    case $mode in
        --mark) snapshot >"$mark"; echo "traffic: counters marked"; return 0 ;;
        --since-mark) [ -s "$mark" ] || die "no mark: run 'netns.sh traffic --mark' first" ;;
        "") ;;
        *) die "usage: netns.sh traffic [--mark | --since-mark]" ;;
    esac
    local total_s=0 total_r=0
    printf '%-4s %-15s %15s %15s\n' host address sent_bytes received_bytes
    while read -r name addr sent received; do
        if [ "$mode" = --since-mark ]; then
            local s0 r0
            read -r s0 r0 < <(awk -v h="$name" '$1 == h { print $3, $4 }' "$mark")
            sent=$((sent - ${s0:-0}))
            received=$((received - ${r0:-0}))
        fi
        printf '%-4s %-15s %15d %15d\n' "$name" "$addr" "$sent" "$received"
        total_s=$((total_s + sent))
        total_r=$((total_r + received))
    done < <(snapshot)
    printf '%-4s %-15s %15d %15d\n' all "" "$total_s" "$total_r"
}

cmd_exec() {
    local host=${1:-}
    [ -n "$host" ] && [ $# -ge 2 ] || die "usage: netns.sh exec HOST COMMAND..."
    shift
    local name addr ns veth line
    line=$(resolve "$host") || exit 1
    read -r name addr ns veth <<<"$line"
    exec ip netns exec "$ns" "$@"
}

cmd_pids() {
    local name addr ns veth line
    line=$(resolve "${1:-}") || exit 1
    read -r name addr ns veth <<<"$line"
    ip netns pids "$ns"
}

cmd_hosts() {
    have_state || die "no harness is up"
    hosts_in_state | awk '{ print $1, $2, $3 }'
}

case ${1:-} in
    up) shift; cmd_up "$@" ;;
    down) cmd_down ;;
    status) cmd_status ;;
    hosts) cmd_hosts ;;
    check) cmd_check ;;
    cut) cmd_link down "${2:-}" ;;
    restore) cmd_link up "${2:-}" ;;
    exec) shift; cmd_exec "$@" ;;
    pids) cmd_pids "${2:-}" ;;
    traffic) shift; cmd_traffic "$@" ;;
    state) echo "$STATE" ;;
    -h|--help|help) sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' ;;
    *) sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
