#!/usr/bin/env python3
"""Group fuzz findings by what they trigger: scripts/fuzz_triage.py TARGET FILE...

Runs each input once through the built fuzz target (same bounds as scripts/fuzz.sh) and prints one line per
distinct signature (kind + panic message location + the first frames outside std/libFuzzer), with the smallest
input that shows it and how many inputs share it. Run scripts/fuzz.sh first (it builds the targets), with the same CARGO_TARGET_DIR.
"""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP = re.compile(r"/rustc/|libfuzzer-sys|compiler-rt|^(std|core|alloc|libfuzzer_sys|__|fuzzer::|<alloc::|<core::|<std::)")


def short(func):
    # Drop generic arguments and closure noise so one site gives one name.
    depth, out = 0, []
    for ch in func:
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif depth == 0:
            out.append(ch)
    return "".join(out).replace("{closure#0}", "{closure}").strip()


def place(loc):
    """A source location without the machine's prefixes: `crate-1.2.3/src/x.rs:10` or `src/x.rs:10`."""
    if loc.startswith(ROOT + "/"):
        return loc[len(ROOT) + 1 :]
    m = re.search(r"/registry/src/[^/]+/(.+)$", loc)
    return m.group(1) if m else loc


def signature(out):
    kind = "unknown"
    for pat, k in [
        (r"out-of-memory \(malloc\((\d+)\)\)", "oom-malloc"),
        (r"out-of-memory \(used: (\d+)Mb", "oom-rss"),
        (r"ERROR: libFuzzer: timeout", "timeout"),
        (r"stack-overflow", "stack-overflow"),
        (r"panicked at ([^\n]+):\n([^\n]*)", "panic"),
        (r"ERROR: AddressSanitizer: ([\w-]+)", "asan"),
        (r"ERROR: libFuzzer: deadly signal", "deadly-signal"),
    ]:
        m = re.search(pat, out)
        if m:
            kind, detail = k, m.groups()
            break
    else:
        return ("none", "", ""), "no failure reproduced"
    frames = []
    for line in out.splitlines():
        m = re.match(r"\s+#\d+ 0x[0-9a-f]+ in (.+?) (/\S+:\d+)(:\d+)?$", line)
        if not m:
            continue
        func, loc = m.group(1), m.group(2)
        if SKIP.search(loc) or SKIP.search(func):
            continue
        frames.append(f"{short(func)} ({place(loc)})")
        if len(frames) == 3:
            break
    where = detail[0] if kind == "panic" else ""
    msg = detail[1] if kind == "panic" else (detail[0] if detail else "")
    desc = {"oom-malloc": f"malloc({msg}) over -malloc_limit_mb", "oom-rss": f"RSS {msg} MB over -rss_limit_mb",
            "panic": f"panic at {where}: {msg}", "asan": f"AddressSanitizer {msg}"}.get(kind, kind)
    return (kind, where, " <- ".join(frames)), desc + " | " + " <- ".join(frames)


def main():
    target, files = sys.argv[1], sys.argv[2:]
    env = dict(os.environ, RUSTC_BOOTSTRAP="1", RAYON_NUM_THREADS="1", RUST_BACKTRACE="1",
               ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "quarantine_size_mb=16:detect_leaks=0"))
    tdir = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "fuzz", "target"))
    binary = os.path.join(tdir, "x86_64-unknown-linux-gnu", "release", target)
    if not os.path.exists(binary):
        sys.exit(f"{binary} is not built: run scripts/fuzz.sh first (same CARGO_TARGET_DIR)")
    groups = {}
    for f in files:
        cmd = [binary, "-rss_limit_mb=512", "-malloc_limit_mb=256", "-timeout=5", f]
        try:
            p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, errors="replace", timeout=120)
            out = p.stdout + p.stderr
        except subprocess.TimeoutExpired:
            out = "ERROR: libFuzzer: timeout (harness)"
        key, desc = signature(out)
        g = groups.setdefault(key, {"desc": desc, "files": []})
        g["files"].append(f)
    for key, g in sorted(groups.items(), key=lambda kv: -len(kv[1]["files"])):
        smallest = min(g["files"], key=os.path.getsize)
        print(f"{len(g['files']):4d} x  {os.path.basename(smallest)} ({os.path.getsize(smallest)} B)  {g['desc']}")


if __name__ == "__main__":
    main()
