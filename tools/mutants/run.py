#!/usr/bin/python3
"""make mutants: applies each mutant of mutants.py, alone, to a scratch copy
of the working tree, builds it and runs the tests named for it. A mutant
the tests do not catch ("survived") is a guarantee without a real test.

    tools/mutants/run.py [--only SUBSTRING] [--keep]

Exit status 0 when every mutant is killed. Not part of CI's required path:
each mutant costs a build and its tests (about a minute)."""
import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from mutants import MUTANTS  # noqa: E402


def copy_tree(dst):
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split("\n")
    for f in filter(None, files):
        src = os.path.join(ROOT, f)
        if not os.path.isfile(src):
            continue
        os.makedirs(os.path.dirname(os.path.join(dst, f)), exist_ok=True)
        shutil.copy2(src, os.path.join(dst, f))


def run(cmd, cwd, log):
    log.write(("\n$ %s\n" % cmd).encode())
    log.flush()
    return subprocess.run(cmd, shell=True, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                          timeout=1800).returncode


def test_commands(tests):
    for t in tests:
        if t.startswith("unit:"):
            yield "build/unit_tests %s" % shlex.quote(t[5:])
        else:
            yield "TXP_BUILD=build /usr/bin/python3 -m pytest -q -x tests/integration/%s" % t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--only", help="run the mutants whose name contains this")
    ap.add_argument("--keep", action="store_true", help="keep the scratch copies")
    args = ap.parse_args()
    chosen = [m for m in MUTANTS if not args.only or args.only in m[0]]
    results = []
    for n, (name, path, old, new, tests) in enumerate(chosen, 1):
        scratch = tempfile.mkdtemp(prefix="txp-mutant-")
        copy_tree(scratch)
        target = os.path.join(scratch, path)
        text = open(target).read()
        if text.count(old) != 1:
            results.append((name, "STALE (patch does not apply)"))
            print("[%d/%d] %-60s STALE: the text to change is not in %s once" % (n, len(chosen), name, path))
            shutil.rmtree(scratch, ignore_errors=True)
            continue
        open(target, "w").write(text.replace(old, new))
        t0 = time.monotonic()
        with open(os.path.join(scratch, "mutant.log"), "wb") as log:
            if run("make -s all", scratch, log) != 0:
                verdict = "BROKEN (the mutant does not build: fix its patch)"
            else:
                failed = [c for c in test_commands(tests) if run(c, scratch, log) != 0]
                verdict = "killed" if failed else "SURVIVED"
        results.append((name, verdict))
        print("[%d/%d] %-60s %s (%.0f s)%s" % (n, len(chosen), name, verdict, time.monotonic() - t0,
                                                "  log: %s/mutant.log" % scratch if args.keep else ""))
        sys.stdout.flush()
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    survived = [r for r in results if not r[1].startswith("killed")]
    print("\n%d mutants, %d killed, %d survived or stale" % (len(results), len(results) - len(survived),
                                                            len(survived)))
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
