#!/usr/bin/env python3
"""Wall-time comparison of stealcp against cp -a, rsync -aAX, xcp and fcp on two corpora
(with each run's CPU time, user plus system, of the copier and its worker processes).

Run through `stealcp/benches/compare/run.sh`, which builds stealcp and installs the other contenders.

Corpora (built once under the work directory, reused by later runs):
  small  many small files in a real tree: the Rust toolchain's HTML documentation
         (tens of thousands of files), or, without it, the cargo registry sources;
  large  a few large files (4 x 256 MiB of incompressible bytes).
Both get extended attributes (a `user.*` attribute on every 4th file, an ACL on every 16th;
`--no-xattrs` leaves them out), so that `-a` is measured with its full preservation set.

For each corpus, every contender copies the source into a fresh destination, `rounds` times,
in an order that rotates each round; the destination is removed and `sync` run between runs
(neither is timed); the page cache is warm (a warm-up copy runs first).

`run.sh` (as root) puts the corpora and the outputs on a freshly made ext4 file system (default
mkfs options, so with a journal) in a loop-mounted image file, so that every run starts from
the same state. That matters: on an ext4 without a journal (this VM's root file system), inode
allocation skips inodes freed in the last one to five minutes (ext4's `recently_deleted`), so
creating 50k files after deleting 50k others costs several times the kernel time, and the
figures then measure earlier deletions, not copiers. Without the loop file system, pass
--keep-small-outputs (each run then writes a fresh directory, all removed at the end) and a
--settle time. After every run the
output tree is compared with the source: contents and file types for every contender, and
modes, modification times (ns) and extended attributes with ACLs for the contenders that keep
them (cp -a, rsync -aAX, stealcp -a).

Writes results.json and results.md to the work directory and, if matplotlib is available,
the plot given with --plot.
"""

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import stat
import statistics
import subprocess
import sys
import time
from pathlib import Path


def manifest(root, with_meta):
    """Relative path -> (type, size, content digest[, mode, mtime_ns]) for a whole tree."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                entry = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                entry = ("dir",)
            elif stat.S_ISREG(st.st_mode):
                h = hashlib.blake2b(digest_size=16)
                with open(path, "rb") as f:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
                entry = ("file", st.st_size, h.hexdigest())
            else:
                entry = ("special", stat.S_IFMT(st.st_mode))
            if with_meta and not stat.S_ISLNK(st.st_mode):
                # Directory times are checked too: cp -a keeps them. ACLs are the
                # system.posix_acl_* attributes.
                entry += (stat.S_IMODE(st.st_mode), st.st_mtime_ns, xattrs(path))
            out[rel] = entry
    return out


def xattrs(path):
    """The extended attributes of `path` (ACLs included), sorted, with their values."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    return tuple(sorted((n, os.getxattr(path, n, follow_symlinks=False)) for n in names))


def add_xattrs(root):
    """A `user.*` attribute on every 4th regular file and an ACL (setfacl) on every 16th."""
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
    files = [f for f in files if stat.S_ISREG(os.lstat(f).st_mode)]
    for i, f in enumerate(files[::4]):
        os.setxattr(f, "user.stealcp.bench", f"attribute {i}".encode())
    acl = files[::16]
    for i in range(0, len(acl), 500):
        subprocess.run(["setfacl", "-m", "u:65534:r", "--", *acl[i : i + 500]], check=True)
    return f"xattrs on {len(files[::4])} files, ACLs on {len(acl)}"


def build_small(dest):
    sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True).stdout.strip()
    candidates = [
        Path(sysroot) / "share/doc/rust/html",
        Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo")) / "registry/src",
    ]
    for c in candidates:
        if c.is_dir():
            print(f"small corpus: a copy of {c}", flush=True)
            subprocess.run(["cp", "-a", str(c), str(dest)], check=True)
            return str(c)
    sys.exit("no tree to build the small-file corpus from (rust docs or cargo registry)")


def build_large(dest, files, mib):
    dest.mkdir(parents=True)
    for i in range(files):
        with open(dest / f"large-{i}.bin", "wb") as f:
            for _ in range(mib):
                f.write(os.urandom(1 << 20))
    return f"{files} x {mib} MiB of random bytes"


def contenders(stealcp, tools, jobs):
    """name -> (argv builder (src, dst) -> list, keeps modes and times)."""
    c = {
        "cp -a": (lambda s, d: ["cp", "-a", s, d], True),
    }
    if shutil.which("rsync"):
        c["rsync -aAX"] = (lambda s, d: ["rsync", "-aAX", s + "/", d + "/"], True)
    xcp = tools / "xcp"
    if xcp.exists():
        c["xcp -r"] = (lambda s, d: [str(xcp), "-r", "-w", "0", "--no-progress", s, d], False)
    fcp = tools / "fcp"
    if fcp.exists():
        c["fcp"] = (lambda s, d: [str(fcp), s, d], False)
    j = ["-j", str(jobs)] if jobs else []
    c["stealcp -a (thread)"] = (lambda s, d: [stealcp, "-a", "--no-progress", *j, s, d], True)
    c["stealcp -a (process)"] = (lambda s, d: [stealcp, "-a", "--no-progress", "--backend", "process", *j, s, d], True)
    # Like for like with xcp -r and fcp, which keep neither times nor ownership.
    c["stealcp -r (thread)"] = (lambda s, d: [stealcp, "-r", "--no-progress", *j, s, d], False)
    return c


def clear(path):
    if os.path.lexists(path):
        subprocess.run(["rm", "-rf", str(path)], check=True)  # much faster than shutil.rmtree
    subprocess.run(["sync"], check=True)


def settle(seconds):
    """Waits out ext4's window for recently freed inodes (see the module docs)."""
    print(f"   waiting {seconds} s for recently freed inodes to age out", flush=True)
    time.sleep(seconds)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="target/pcp-bench")
    ap.add_argument("--stealcp", default="target/release/stealcp")
    ap.add_argument("--tools", default="target/pcp-bench/tools/bin")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=0, help="stealcp -j (0: stealcp's default, one per CPU)")
    ap.add_argument("--large-files", type=int, default=4)
    ap.add_argument("--large-mib", type=int, default=256)
    ap.add_argument("--corpus", action="append", choices=["small", "large"])
    ap.add_argument("--plot", default="docs/pcp-bench.png")
    ap.add_argument("--results", default="target/pcp-bench", help="where results.json and results.md go")
    ap.add_argument("--keep-small-outputs", action="store_true", help="never delete small-file outputs mid-run")
    ap.add_argument("--settle", type=int, default=0, help="seconds to wait after deleting many files")
    ap.add_argument("--settle-always", action="store_true", help="wait before the small corpus even if this run deleted nothing")
    ap.add_argument("--fs-note", default="", help="how to describe the file system in the results")
    ap.add_argument("--skipped", default="", help="notes on contenders that could not be installed")
    ap.add_argument("--no-xattrs", action="store_true", help="build the corpora without xattrs and ACLs")
    args = ap.parse_args()

    work = Path(args.work).resolve()
    corpora = args.corpus or ["small", "large"]
    tools = Path(args.tools).resolve()
    cands = contenders(str(Path(args.stealcp).resolve()), tools, args.jobs)
    results = {"machine": {}, "corpora": {}, "skipped": [s for s in args.skipped.split(";") if s]}
    results["machine"] = {
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "filesystem": args.fs_note
        or subprocess.run(["stat", "-f", "-c", "%T", str(work)], capture_output=True, text=True).stdout.strip(),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "rounds": args.rounds,
    }
    for name in corpora:
        src = work / f"corpus-{name}"
        if not src.exists():
            origin = build_small(src) if name == "small" else build_large(src, args.large_files, args.large_mib)
            if not args.no_xattrs:
                origin += "; " + add_xattrs(src)
            (work / f"corpus-{name}.origin").write_text(origin)
        origin = (work / f"corpus-{name}.origin").read_text()
        files = sum(len(f) for _, _, f in os.walk(src))
        size = sum(os.lstat(os.path.join(d, f)).st_size for d, _, fs in os.walk(src) for f in fs)
        print(f"== {name}: {files} files, {size / 2**20:.0f} MiB ({origin})", flush=True)
        expect_full = manifest(src, True)
        expect_plain = {k: v[:3] if v[0] == "file" else v[:2] if v[0] == "link" else v[:1] for k, v in expect_full.items()}
        outputs = work / "out"
        keep = name == "small" and args.keep_small_outputs
        had_outputs = outputs.exists()
        clear(outputs)
        outputs.mkdir()
        if keep and args.settle and (had_outputs or args.settle_always):
            settle(args.settle)
        runs = iter(range(1_000_000))

        def fresh():
            return str(outputs / f"run-{next(runs)}")

        times = {c: [] for c in cands}
        cpus = {c: [] for c in cands}
        mismatches = {c: 0 for c in cands}
        # Warm-up: the source into the page cache, and each tool's binary too.
        for c, (argv, _) in cands.items():
            dst = fresh()
            subprocess.run(argv(str(src), dst), check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if not keep:
                clear(dst)  # seven warm-up copies of the large corpus would fill a tmpfs
            subprocess.run(["sync"], check=True)
        order = list(cands)
        for r in range(args.rounds):
            for c in order[r % len(order):] + order[: r % len(order)]:
                argv, keeps_meta = cands[c]
                dst = fresh()
                subprocess.run(["sync"], check=True)
                # CPU time of the copier and every process it waited for (worker processes):
                # what the children's usage grew by across this one run.
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                t0 = time.perf_counter()
                p = subprocess.run(argv(str(src), dst), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                elapsed = time.perf_counter() - t0
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                if p.returncode != 0:
                    print(f"   {c}: exit {p.returncode}: {p.stderr.decode(errors='replace')[:300]}", flush=True)
                got = manifest(dst, keeps_meta)
                if keeps_meta:
                    ok = got == expect_full
                else:
                    ok = {k: v[:3] if v[0] == "file" else v[:2] if v[0] == "link" else v[:1] for k, v in got.items()} == expect_plain
                mismatches[c] += 0 if ok and p.returncode == 0 else 1
                times[c].append(elapsed)
                cpus[c].append(cpu)
                print(
                    f"   round {r + 1} {c:18} {elapsed:7.3f} s (CPU {cpu:6.3f} s) {'ok' if ok else 'OUTPUT DIFFERS'}",
                    flush=True,
                )
                if not keep:
                    clear(dst)
        clear(outputs)
        med = {c: statistics.median(t) for c, t in times.items()}
        others = [c for c in cands if not c.startswith("stealcp")]
        fastest_other = min(others, key=lambda c: med[c])
        results["corpora"][name] = {
            "files": files,
            "mib": round(size / 2**20),
            "origin": origin,
            "median_s": med,
            "runs_s": times,
            "median_cpu_s": {c: statistics.median(t) for c, t in cpus.items()},
            "runs_cpu_s": cpus,
            "mismatched_runs": mismatches,
            "fastest_other": fastest_other,
        }
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    md = render(results)
    (out / "results.md").write_text(md)
    print(md)
    plot(results, args.plot)


def render(results):
    m = results["machine"]
    lines = [
        f"{m['cpus']} CPUs, Linux {m['kernel']}, {m['filesystem']}, commit {m['commit']}, "
        f"median of {m['rounds']} runs, page cache warm.",
        "",
    ]
    for name, r in results["corpora"].items():
        med, fo = r["median_s"], r["fastest_other"]
        lines += [
            f"**{name} files**: {r['files']} files, {r['mib']} MiB ({r['origin']})",
            "",
            "| contender | median wall time | speed vs cp -a | speed vs fastest other ("
            + fo + ") | median CPU time (user + system) | output matched source |",
            "|---|---|---|---|---|---|",
        ]
        cpu = r.get("median_cpu_s", {})
        for c, t in sorted(med.items(), key=lambda kv: kv[1]):
            runs = len(r["runs_s"][c])
            ok = runs - r["mismatched_runs"][c]
            spent = f"{cpu[c]:.3f} s" if c in cpu else "-"
            lines.append(
                f"| {c} | {t:.3f} s | {med['cp -a'] / t:.2f}x | {med[fo] / t:.2f}x | {spent} | {ok}/{runs} |"
            )
        lines.append("")
    for s in results["skipped"]:
        lines.append(f"Skipped: {s}")
    return "\n".join(lines) + "\n"


def plot(results, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot", flush=True)
        return
    corpora = list(results["corpora"].items())
    fig, axes = plt.subplots(1, len(corpora), figsize=(6 * len(corpora), 3.8))
    if len(corpora) == 1:
        axes = [axes]
    for ax, (name, r) in zip(axes, corpora):
        med = sorted(r["median_s"].items(), key=lambda kv: kv[1], reverse=True)
        names = [c for c, _ in med]
        vals = [t for _, t in med]
        colors = ["#d95f02" if c.startswith("stealcp") else "#7570b3" for c in names]
        ax.barh(names, vals, color=colors)
        ax.set_xlabel("median wall time (s), lower is better")
        ax.set_title(f"{name} files: {r['files']} files, {r['mib']} MiB")
        for y, v in enumerate(vals):
            ax.text(v, y, f" {v:.2f}", va="center", fontsize=8)
    m = results["machine"]
    fig.suptitle(f"stealcp vs other copiers ({m['cpus']} CPUs, {m['filesystem']}, warm cache, commit {m['commit']})")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"plot: {path}", flush=True)


if __name__ == "__main__":
    main()
