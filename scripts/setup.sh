#!/usr/bin/env bash
# Installs what qcow2-ref needs on a fresh Debian machine: qemu-utils (qemu-img, qemu-io) through
# apt-get when qemu-img is missing, python3 when missing, then the npm packages pinned in package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v qemu-img >/dev/null 2>&1 || ! command -v qemu-io >/dev/null 2>&1; then
  echo "setup: installing qemu-utils (qemu-img, qemu-io) with apt-get" >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-utils >/dev/null
fi
qemu-img --version | head -n 1 >&2

# The map tests (and `qcow2-ref map`) ask the file system for holes with SEEK_DATA through python3,
# as QEMU does with lseek; Node has no SEEK_DATA.
if ! command -v python3 >/dev/null 2>&1; then
  echo "setup: installing python3 with apt-get" >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-minimal >/dev/null
fi

if ! command -v node >/dev/null 2>&1; then
  echo "setup: Node.js >= 20 is required (apt-get install nodejs npm, or your usual Node install)" >&2
  exit 1
fi
node -e 'const [maj]=process.versions.node.split(".").map(Number); if (maj < 20) { console.error("setup: Node.js >= 20 is required, found " + process.version); process.exit(1); }'

echo "setup: npm ci" >&2
npm ci --no-audit --no-fund --loglevel=error
