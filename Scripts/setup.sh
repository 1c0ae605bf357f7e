#!/usr/bin/env bash
# Installs the system packages adaface-dist builds against (only those missing; `apt-get update`
# first) and builds the project in release mode. Pass --tests to build the test targets too.
set -euo pipefail
cd "$(dirname "$0")/.."

# iproute2 (ip, tc, ss) for the network-namespace hosts of cluster/local.
packages=(pkg-config libopenmpi-dev openmpi-bin libopenblas-dev libzstd-dev libturbojpeg0-dev procps iproute2)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "==> installing ${missing[*]}"
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

build_flags=(-c release)
[ "${1:-}" = "--tests" ] && build_flags+=(--build-tests)
echo "==> swift build ${build_flags[*]}"
swift build "${build_flags[@]}"
