#!/usr/bin/env bash
# stealcp against cp -a, rsync -a, xcp and fcp: builds stealcp, installs what is missing, runs
# stealcp/benches/compare/compare.py (options are passed on, e.g. --rounds 3 --corpus small).
# Results: target/pcp-bench/results.{md,json}; plot: docs/pcp-bench.png.
set -uo pipefail
cd "$(dirname "$0")/../../.." # the workspace root
work=target/pcp-bench
mkdir -p "$work"
skipped=""

cargo build --release -p stealcp || exit 1

for tool in xcp fcp; do
  if [ ! -x "$work/tools/bin/$tool" ]; then
    echo "installing $tool with cargo install"
    cargo install --locked --root "$work/tools" "$tool" >"$work/$tool-install.log" 2>&1 \
      || skipped="$skipped$tool: cargo install failed (see $work/$tool-install.log);"
  fi
done
if ! command -v rsync >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y rsync >"$work/rsync-install.log" 2>&1 || true
  fi
  command -v rsync >/dev/null 2>&1 || skipped="${skipped}rsync: not installed and could not be installed;"
fi

python=python3
if [ ! -x "$work/venv/bin/python" ]; then
  python3 -m venv "$work/venv" && "$work/venv/bin/pip" install -q matplotlib >"$work/pip.log" 2>&1 || true
fi
[ -x "$work/venv/bin/python" ] && python="$work/venv/bin/python"

# A fresh journaled ext4 in a loop-mounted image (root only): every run starts from the same
# file system state (see compare.py's notes). Otherwise the work directory is used as it is.
fs="$work/fs"
if [ "$(id -u)" = 0 ] && command -v mkfs.ext4 >/dev/null 2>&1 && [ -z "${PCP_BENCH_NO_LOOP:-}" ]; then
  mountpoint -q "$fs" && umount "$fs"
  rm -f "$work/ext4.img"
  truncate -s 12G "$work/ext4.img"
  mkfs.ext4 -q -F "$work/ext4.img"
  mkdir -p "$fs"
  if mount -o loop "$work/ext4.img" "$fs"; then
    trap 'umount "$fs"; rm -f "$work/ext4.img"' EXIT
    "$python" stealcp/benches/compare/compare.py --work "$fs" --results "$work" \
      --fs-note "fresh ext4 (journal) in a loop-mounted image" --skipped "$skipped" "$@"
    exit $?
  fi
  echo "could not mount a loop file system; using $work as it is"
fi
"$python" stealcp/benches/compare/compare.py --keep-small-outputs --settle 120 --settle-always --skipped "$skipped" "$@"
