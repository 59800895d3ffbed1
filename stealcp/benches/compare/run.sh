#!/usr/bin/env bash
# stealcp against cp -a, rsync -aAX, xcp and fcp: builds stealcp, installs what is missing, runs
# stealcp/benches/compare/compare.py (options are passed on, e.g. --rounds 3 --corpus small).
# Results: target/pcp-bench/{ext4,tmpfs}/results.{md,json}; plots: docs/pcp-bench{,-tmpfs}.png.
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

# The corpus gets ACLs (setfacl, from the acl package) beside its xattrs.
if ! command -v setfacl >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get install -y acl >"$work/acl-install.log" 2>&1 || true
fi

python=python3
if [ ! -x "$work/venv/bin/python" ]; then
  python3 -m venv "$work/venv" && "$work/venv/bin/pip" install -q matplotlib >"$work/pip.log" 2>&1 || true
fi
[ -x "$work/venv/bin/python" ] && python="$work/venv/bin/python"

# Two file systems, one after the other, results in $work/<fs>/results.{md,json}:
# - ext4: a fresh journaled ext4 in a loop-mounted image (root only), so every run starts from
#   the same file system state (see compare.py's notes); otherwise the work directory as it is;
# - tmpfs: where no disk is involved and each copier's own CPU cost shows (a tmpfs mounted for
#   the run as root, else a directory in /dev/shm). PCP_BENCH_FS=ext4 or =tmpfs runs one only.
status=0
run_compare() { "$python" stealcp/benches/compare/compare.py --skipped "$skipped" "$@" || status=1; }
cleanup() {
  for m in "$work/fs" "$work/tmpfs-fs"; do mountpoint -q "$m" && umount "$m"; done
  rm -f "$work/ext4.img"
  [ -n "${shm:-}" ] && rm -rf "$shm"
}
trap cleanup EXIT
want="${PCP_BENCH_FS:-ext4 tmpfs}"

if [[ " $want " == *" ext4 "* ]]; then
  fs="$work/fs"
  if [ "$(id -u)" = 0 ] && command -v mkfs.ext4 >/dev/null 2>&1 && [ -z "${PCP_BENCH_NO_LOOP:-}" ]; then
    mountpoint -q "$fs" && umount "$fs"
    rm -f "$work/ext4.img"
    truncate -s 12G "$work/ext4.img"
    mkfs.ext4 -q -F "$work/ext4.img"
    mkdir -p "$fs"
  fi
  if mountpoint -q "$fs" || mount -o loop "$work/ext4.img" "$fs" 2>/dev/null; then
    run_compare --work "$fs" --results "$work/ext4" --plot docs/pcp-bench.png \
      --fs-note "fresh ext4 (journal) in a loop-mounted image" "$@"
    umount "$fs"; rm -f "$work/ext4.img"
  else
    echo "could not mount a loop file system; using $work as it is"
    run_compare --results "$work/ext4" --keep-small-outputs --settle 120 --settle-always "$@"
  fi
fi

if [[ " $want " == *" tmpfs "* ]]; then
  t="$work/tmpfs-fs"
  mkdir -p "$t"
  if [ "$(id -u)" = 0 ] && mount -t tmpfs -o size=8G tmpfs "$t" 2>/dev/null; then
    note="tmpfs (a fresh mount)"
  else
    shm=$(mktemp -d -p /dev/shm pcp-bench.XXXXXX); t="$shm"; note="tmpfs (/dev/shm)"
  fi
  run_compare --work "$t" --results "$work/tmpfs" --plot docs/pcp-bench-tmpfs.png --fs-note "$note" "$@"
fi
exit $status
