#!/usr/bin/env python3
"""make bench-scale: ingest and apply of txprocd as one thing at a time
changes -- workers (1, 2, 4), frontends (1, 2, 4), wrk connections (1, 16,
64, 256) and demo accounts (10,000 and 1,000,000) -- everything else at the
defaults of `make bench` (2 frontends, 2 workers, 64 connections, 10,000
accounts, batch-max 1024).

Each point runs on a fresh server and measures
  ingest  202s/s of wrk posting single transactions (--ingest-seconds)
  apply   committed/s while the workers drain a backlog that batch ingest
          (arrays of 100) built in --fill-seconds, no HTTP load, measured
          for at most --drain-seconds
and, on the accounts chart, the storage ceiling (sqlite_ceiling, naive) at
that account count. Points are repeated --reps times, interleaved; charts
show the median with min-max bars. Durations are shorter than `make bench`
(say so on the charts) to keep the whole run near 10 minutes.

Writes <out>/scale.json and <charts>/scale-<dimension>.png (gnuplot).
"""
import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as bl  # noqa: E402

DIMENSIONS = [
    ("workers", [1, 2, 4], "worker processes"),
    ("frontends", [1, 2, 4], "frontend processes"),
    ("connections", [1, 16, 64, 256], "wrk connections"),
    ("accounts", [10000, 1000000], "demo accounts"),
]
DEFAULTS = {"workers": 2, "frontends": 2, "connections": 64, "accounts": 10000}


def run_point(a, templates, p):
    srv = bl.Txprocd(a.build, p["accounts"], ["--queue-size", 4194304, "--batch-max", a.batch_max,
                                              "--workers", p["workers"], "--frontends", p["frontends"]],
                     template=templates[p["accounts"]])
    try:
        srv.start()
        c = p["connections"]
        w = bl.wrk(srv.url, a.ingest_seconds, min(2, c), c, p["accounts"])
        fill = bl.wrk(srv.url, a.fill_seconds, 2, 64, p["accounts"], batch=100)
        samples = bl.sample_until_drained(srv, a.drain_seconds)
        busy = [s for s in samples if s["queue"]["depth"] > 0]
        apply = bl.rate(busy, busy[0]["t"], busy[-1]["t"]) if len(busy) >= 2 else None
        srv.stop(kill=True)
        return {"ingest_per_s": w["ok_per_s"], "ingest_p99_ms": w["latency_us"]["p99"] / 1000,
                "ingest_non_202": w["errors"]["status"] + w["socket_errors"],
                "apply_per_s": apply, "backlog": busy[0]["queue"]["depth"] if busy else 0,
                "fill_tx_per_s": fill["ok_per_s"] * 100}
    finally:
        srv.cleanup()


GNUPLOT = r"""
set terminal pngcairo noenhanced size 900,600 font "DejaVu Sans,10"
set output '{png}'
set title "{title}\n{subtitle1}\n{subtitle2}" font "DejaVu Sans,9"
set xlabel "{xlabel}"
set ylabel "thousand transactions / s"
set yrange [0:*]
set grid ytics lc rgb "#dddddd"
set key below
set offsets 0.3, 0.3, 0, 0
set xtics ({xtics})
$data << EOD
{rows}
EOD
plot $data using 1:2:3:4 with yerrorlines lw 2 pt 7 lc rgb "#1f77b4" title "ingest: 202/s, single-transaction POSTs", \
     $data using 1:5:6:7 with yerrorlines lw 2 pt 5 lc rgb "#d62728" title "apply: committed/s draining a backlog"{extra}
"""


def chart(a, meta, dim, values, xlabel, points, ceilings, png):
    def stats(key, v):
        s = bl.spread([r[key] for r in points[dim][str(v)]])
        return [(x or 0) / 1000.0 for x in (s["median"], s["min"], s["max"])]
    rows, xtics = [], []
    for i, v in enumerate(values):
        cols = [i, *stats("ingest_per_s", v), *stats("apply_per_s", v)]
        if ceilings:
            cols += [x / 1000.0 for x in ceilings[str(v)]]
        rows.append(" ".join("%g" % x for x in cols))
        xtics.append('"%s" %d' % ("{:,}".format(v), i))
    extra = ""
    if ceilings:
        extra = (', \\\n     $data using 1:8:9:10 with yerrorlines lw 2 pt 9 dt 2 lc rgb "#2ca02c" '
                 'title "storage ceiling: sqlite_ceiling, naive SELECT/UPDATE/INSERT"')
    others = ", ".join("%s %s" % ("{:,}".format(DEFAULTS[k]), k) for k in DEFAULTS if k != dim)
    subtitle1 = "%s, commit %s, %s cores (%s), shared machine" % (
        meta["date"], meta["commit"], meta["machine"]["cores"], meta["machine"]["cpu"])
    subtitle2 = ("short runs: %d s ingest + up to %g s drain per point; median of %d, bars min-max; "
                 "batch-max %d; %s") % (a.ingest_seconds, a.drain_seconds, a.reps, a.batch_max, others)
    script = GNUPLOT.format(png=png, title="txprocd: ingest and apply vs " + xlabel,
                            subtitle1=subtitle1.replace('"', "'"), subtitle2=subtitle2, xlabel=xlabel,
                            xtics=", ".join(xtics), rows="\n".join(rows), extra=extra)
    subprocess.run(["gnuplot"], input=script, text=True, check=True, timeout=60)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default="build")
    p.add_argument("--out", default="bench")
    p.add_argument("--charts", default="docs/bench")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--batch-max", type=int, default=1024)
    p.add_argument("--ingest-seconds", type=int, default=5)
    p.add_argument("--fill-seconds", type=int, default=1)
    p.add_argument("--drain-seconds", type=float, default=4)
    p.add_argument("--ceiling-seconds", type=float, default=4)
    p.add_argument("--only", default=",".join(d[0] for d in DIMENSIONS))
    a = p.parse_args()
    a.build = (bl.ROOT / a.build) if not Path(a.build).is_absolute() else Path(a.build)
    out = Path(a.out) if Path(a.out).is_absolute() else bl.ROOT / a.out
    charts = Path(a.charts) if Path(a.charts).is_absolute() else bl.ROOT / a.charts
    out.mkdir(parents=True, exist_ok=True)
    charts.mkdir(parents=True, exist_ok=True)
    dims = [d for d in DIMENSIONS if d[0] in a.only.split(",")]

    started = time.time()
    meta = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "commit": bl.git_commit(),
            "machine": bl.machine(), "versions": bl.versions(), "loadavg_start": bl.loadavg(),
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}}
    tmp = Path(tempfile.mkdtemp(prefix="txp-bench-scale-"))
    templates = {}
    points = {d[0]: {str(v): [] for v in d[1]} for d in dims}
    ceilings = {}
    try:
        for n in sorted({v for d in dims if d[0] == "accounts" for v in d[1]} | {DEFAULTS["accounts"]}):
            templates[n] = tmp / ("seed-%d.db" % n)
            bl.log("seeding %d accounts" % n)
            bl.seed(a.build, templates[n], n)
        for rep in range(a.reps):
            for dim, values, _ in dims:
                for v in values:
                    pt = dict(DEFAULTS, **{dim: v})
                    bl.log("rep %d/%d: %s = %s" % (rep + 1, a.reps, dim, v))
                    points[dim][str(v)].append(run_point(a, templates, pt))
                if dim == "accounts":
                    for v in values:
                        c = bl.ceiling(a.build, "naive", a.batch_max, a.ceiling_seconds, v)
                        ceilings.setdefault(str(v), []).append(c["per_second"])
    finally:
        bl.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    meta["loadavg_end"] = bl.loadavg()
    meta["elapsed_s"] = round(time.time() - started, 1)
    ceil_stats = {k: (bl.med(v), min(v), max(v)) for k, v in ceilings.items()}
    (out / "scale.json").write_text(json.dumps({"meta": meta, "points": points, "ceilings": ceilings},
                                               indent=2) + "\n")
    print()
    print("txprocd make bench-scale — %s, commit %s; medians of %d (min – max)" % (
        meta["date"], meta["commit"], a.reps))
    for dim, values, xlabel in dims:
        print("%s:" % xlabel)
        for v in values:
            rs = points[dim][str(v)]
            ing = bl.spread([r["ingest_per_s"] for r in rs])
            app = bl.spread([r["apply_per_s"] for r in rs])
            line = "  %-10s ingest %9s/s (%s–%s)   apply %9s/s (%s–%s)" % (
                "{:,}".format(v), "{:,.0f}".format(ing["median"]), "{:,.0f}".format(ing["min"]),
                "{:,.0f}".format(ing["max"]), "{:,.0f}".format(app["median"] or 0),
                "{:,.0f}".format(app["min"] or 0), "{:,.0f}".format(app["max"] or 0))
            if dim == "accounts":
                line += "   ceiling %s/s" % "{:,.0f}".format(ceil_stats[str(v)][0])
            print(line)
        png = charts / ("scale-%s.png" % dim)
        chart(a, meta, dim, values, xlabel, points, ceil_stats if dim == "accounts" else None, png)
        print("  chart: %s" % png.relative_to(bl.ROOT) if png.is_relative_to(bl.ROOT) else png)
    print("wrote %s (%.0f s)" % (out / "scale.json", meta["elapsed_s"]))


if __name__ == "__main__":
    main()
