#!/usr/bin/env bash
# Installs what qcow2-ref needs on a fresh Debian machine: qemu-utils (qemu-img, qemu-io) through
# apt-get when qemu-img is missing, python3 when missing, libqcow's python3 module and 7-Zip (the
# other readers the conformance tests run) when missing, then the npm packages pinned in package-lock.json.
# With --tests it also installs what only the tests need (Debian's chromium, for test/qemu/browser.test.ts;
# libnbd-bin and fio, the NBD clients of test/qemu/nbd-*.test.ts) when missing, so the main job never
# waits for a browser.
#
#   bash scripts/setup.sh           # what the commands need
#   bash scripts/setup.sh --tests   # and what `npm test` needs
set -euo pipefail
cd "$(dirname "$0")/.."

tests=0
for arg in "$@"; do
  case "$arg" in
    --tests) tests=1 ;;
    *) echo "setup: unknown argument $arg (usage: bash scripts/setup.sh [--tests])" >&2; exit 2 ;;
  esac
done

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

# The other qcow2 implementations the conformance tests and the scoreboard run: libqcow and 7-Zip.
need=()
/usr/bin/python3 -c 'import pyqcow' >/dev/null 2>&1 || need+=(python3-libqcow)
command -v 7zz >/dev/null 2>&1 || need+=(7zip)
if [ "${#need[@]}" -gt 0 ]; then
  echo "setup: installing ${need[*]} with apt-get (conformance adapters)" >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Test-only packages: the real-browser test drives Debian's chromium headless (playwright-core, no
# browser download); the NBD tests and `npm run bench:nbd` use libnbd's nbdinfo and nbdcopy
# (libnbd-bin) and fio's nbd engine (fio) as clients of `qcow2-ref serve` (qemu-nbd comes with
# qemu-utils).
if [ "$tests" -eq 1 ]; then
  need=()
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v nbdinfo >/dev/null 2>&1 || need+=(libnbd-bin)
  command -v fio >/dev/null 2>&1 || need+=(fio)
  if [ "${#need[@]}" -gt 0 ]; then
    echo "setup: installing ${need[*]} with apt-get (tests only)" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi

if ! command -v node >/dev/null 2>&1; then
  echo "setup: Node.js >= 20 is required (apt-get install nodejs npm, or your usual Node install)" >&2
  exit 1
fi
node -e 'const [maj]=process.versions.node.split(".").map(Number); if (maj < 20) { console.error("setup: Node.js >= 20 is required, found " + process.version); process.exit(1); }'

echo "setup: npm ci" >&2
npm ci --no-audit --no-fund --loglevel=error
