#!/usr/bin/env bash
# The main job for now: make a real qcow2 image with qemu-img/qemu-io (compressed, zero and data
# clusters, a snapshot) and show every structure in it with `qcow2-ref dump`.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
img="$dir/demo.qcow2"
qemu-img create -q -f qcow2 -o cluster_size=65536,compression_type=zstd "$img" 64M
qemu-io -f qcow2 -c 'write -P 0xab 0 128k' -c 'write -c -P 0x11 1M 64k' -c 'write -z 2M 64k' "$img" >/dev/null
qemu-img snapshot -c first "$img"
qemu-io -f qcow2 -c 'write -P 0xcd 64k 4k' "$img" >/dev/null
node bin/qcow2-ref.mjs dump "$img"
