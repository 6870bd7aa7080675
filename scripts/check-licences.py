#!/usr/bin/env python3
"""The licence and source checks of deny.toml, in seconds, for CI.

cargo-deny (scripts/deny.sh) is the full tool, but it has to be compiled
from crates.io (about 5 minutes on 2 cores, too much of CI's budget). This
reads the same deny.toml and `cargo metadata`, and checks what CI can:

- licences: every package's SPDX expression must be satisfiable with the
  allowed licences (OR: one side; AND: both; `WITH` exceptions as listed);
- sources: every package comes from crates.io or from this workspace;
- wildcards: no dependency outside the workspace asks for version `*`;
- duplicates: crates present in several versions are listed (a warning, as
  deny.toml's `multiple-versions = "warn"`).

Advisories are not checked, here or by cargo-deny on these machines: the
RustSec database is fetched from a git host they cannot reach.

Exit status 0 when every check passes, 1 otherwise. `--self-test` checks
the expression evaluator on known cases (including ones that must fail).
"""

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tomllib

CRATES_IO = "registry+https://github.com/rust-lang/crates.io-index"


def tokens(expr):
    # Old crates write "MIT/Apache-2.0" for "MIT OR Apache-2.0".
    expr = expr.replace("/", " OR ")
    return re.findall(r"\(|\)|[^\s()]+", expr)


def allowed(expr, allow):
    """Whether the SPDX expression `expr` can be met with licences in `allow`."""
    toks = tokens(expr)
    pos = 0

    def peek():
        return toks[pos] if pos < len(toks) else None

    def take():
        nonlocal pos
        pos += 1
        return toks[pos - 1] if pos <= len(toks) else None

    def atom():
        t = take()
        if t == "(":
            v = disjunction()
            if take() != ")":
                raise ValueError(f"unbalanced parentheses in {expr!r}")
            return v
        if t in (None, ")", "AND", "OR", "WITH"):
            raise ValueError(f"unexpected {t!r} in {expr!r}")
        if peek() == "WITH":
            take()
            t = f"{t} WITH {take()}"
        return t.rstrip("+") in allow or t in allow

    def conjunction():
        v = atom()
        while peek() == "AND":
            take()
            v = atom() and v
        return v

    def disjunction():
        v = conjunction()
        while peek() == "OR":
            take()
            v = conjunction() or v
        return v

    v = disjunction()
    if pos != len(toks):
        raise ValueError(f"trailing {toks[pos:]} in {expr!r}")
    return v


def self_test():
    allow = {"MIT", "Apache-2.0", "Apache-2.0 WITH LLVM-exception", "Unicode-3.0", "BSD-3-Clause"}
    cases = [
        ("MIT", True),
        ("MIT OR Apache-2.0", True),
        ("MIT/Apache-2.0", True),
        ("GPL-3.0 OR MIT", True),
        ("GPL-3.0", False),
        ("MIT AND GPL-3.0", False),
        ("(MIT OR Apache-2.0) AND Unicode-3.0", True),
        ("(MIT OR Apache-2.0) AND LGPL-2.1", False),
        ("Apache-2.0 WITH LLVM-exception OR MIT", True),
        ("GPL-2.0 WITH Classpath-exception-2.0", False),
        ("Apache-2.0+", True),
    ]
    bad = [(e, want) for e, want in cases if allowed(e, allow) != want]
    for e, want in bad:
        print(f"self-test: {e!r} should be {'allowed' if want else 'refused'}", file=sys.stderr)
    for broken in ["MIT OR", "(MIT", "AND MIT"]:
        try:
            allowed(broken, allow)
            print(f"self-test: {broken!r} should be a syntax error", file=sys.stderr)
            bad.append(broken)
        except ValueError:
            pass
    print(f"self-test: {len(cases) + 3 - len(bad)}/{len(cases) + 3} cases right")
    return 1 if bad else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=os.path.join(os.path.dirname(__file__), ".."))
    ap.add_argument("--metadata", help="a saved `cargo metadata --format-version 1` (default: run cargo)")
    ap.add_argument("--self-test", action="store_true")
    a = ap.parse_args()
    if a.self_test:
        return self_test()
    root = os.path.abspath(a.root)
    with open(os.path.join(root, "deny.toml"), "rb") as f:
        deny = tomllib.load(f)
    allow = set(deny["licenses"]["allow"])
    target = deny.get("graph", {}).get("targets", [None])[0]
    if a.metadata:
        with open(a.metadata) as f:
            meta = json.load(f)
    else:
        cmd = ["cargo", "metadata", "--format-version", "1", "--locked"]
        if target:
            cmd += ["--filter-platform", target]
        r = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
        if r.returncode != 0:
            print(f"error: {' '.join(cmd)} failed:\n{r.stderr}", file=sys.stderr)
            return 1
        meta = json.loads(r.stdout)
    members = set(meta["workspace_members"])
    # Only what the resolved graph (for the target) pulls in.
    used = {n["id"] for n in meta["resolve"]["nodes"]}
    packages = [p for p in meta["packages"] if p["id"] in used]
    problems = []
    for p in packages:
        name = f"{p['name']} {p['version']}"
        lic = p.get("license")
        if not lic:
            problems.append(f"licence: {name} declares no SPDX licence (license-file: {p.get('license_file')})")
            continue
        try:
            if not allowed(lic, allow):
                problems.append(f"licence: {name} is {lic!r}, not satisfiable with deny.toml's allow list")
        except ValueError as e:
            problems.append(f"licence: {name}: {e}")
        src = p.get("source")
        if p["id"] not in members and src is not None and src != CRATES_IO:
            problems.append(f"source: {name} comes from {src}")
        if p["id"] in members or src is None:
            for d in p["dependencies"]:
                if d.get("path") is None and d.get("req") == "*":
                    problems.append(f"wildcard: {name} depends on {d['name']} = \"*\"")
    versions = collections.defaultdict(set)
    for p in packages:
        versions[p["name"]].add(p["version"])
    dups = sorted((n, sorted(v)) for n, v in versions.items() if len(v) > 1)
    for n, v in dups:
        print(f"warning: {n} in {len(v)} versions: {', '.join(v)}")
    for m in problems:
        print(f"error: {m}", file=sys.stderr)
    print(
        f"{len(packages)} packages: licences {'ok' if not any(m.startswith('licence') for m in problems) else 'FAILED'}, "
        f"sources {'ok' if not any(m.startswith('source') for m in problems) else 'FAILED'}, "
        f"wildcards {'ok' if not any(m.startswith('wildcard') for m in problems) else 'FAILED'}, "
        f"{len(dups)} crates in several versions (warned); advisories not checked (offline)"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
