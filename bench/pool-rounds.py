#!/usr/bin/env python3
"""Pool the rounds of several runs of the shared benchmark harness, per configuration.

The harness takes one extra target per run, so an A/B comparison of two intraport
configurations (audit on and off, say) needs several runs, and on a shared machine one
run against another moves by as much as the effect being measured. This reads each
run's per-round results (`results.tsv` in the run's BENCH_DIR) and reports, for every
group of runs, intraport's medians over all their rounds (req/s, p99, CPU per request,
CPU per request relative to haproxy-plain and req/s relative to haproxy-jwt in the same
round, as the harness's own ratio column), then the second
group against the first: their medians, and when the groups have as many rounds, the
median of the round-by-round differences (runs given in the order they were made).

    bench/pool-rounds.py off=/tmp/b-off1,/tmp/b-off2 on=/tmp/b-on1,/tmp/b-on2

Run the harness with BENCH_DIR set (or read the directory it names) and alternate the
configurations (on, off, off, on, ...) so that drift over time falls on both.
"""

import statistics
import sys


def ms(v):
    """A wrk duration (`643.00us`, `1.15ms`, `2.01s`) in milliseconds."""
    for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if v.endswith(unit):
            return float(v[: -len(unit)]) * f
    return float(v)


def rounds(run_dir):
    """intraport's figures, and its ratios to the peers in the same round, round by round."""
    by_round = {}
    path = f"{run_dir}/results.tsv"
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError as e:
        sys.exit(f"{path}: {e.strerror}")
    for n, line in enumerate(lines, 1):
        fields = line.split("\t")
        if len(fields) != 7:
            sys.exit(f"{path}:{n}: expected 7 tab-separated fields, found {len(fields)}")
        rnd, name, rps, _p50, p99, _non2xx, us = fields
        key = "intraport" if name.startswith("intraport") else name
        try:
            by_round.setdefault(rnd, {})[key] = (float(rps), ms(p99), float(us))
        except ValueError:
            sys.exit(f"{path}:{n}: a figure is not a number: {line!r}")
    out = []
    for rnd, targets in sorted(by_round.items()):
        for needed in ("intraport", "haproxy-plain", "haproxy-jwt"):
            if needed not in targets:
                sys.exit(f"{path}: round {rnd} lacks {needed}")
        rps, p99, us = targets["intraport"]
        out.append((rps, p99, us, us / targets["haproxy-plain"][2], rps / targets["haproxy-jwt"][0]))
    return out


def quartiles(values):
    q = statistics.quantiles(values, n=4) if len(values) >= 2 else [values[0]] * 3
    return f"{q[0]:+.1f} / {q[2]:+.1f}"


def summary(rows):
    med = [statistics.median(col) for col in zip(*rows)]
    return {"n": len(rows), "rps": med[0], "p99": med[1], "us": med[2], "rel": med[3], "jwt": med[4]}


def main(argv):
    if len(argv) < 2 or any("=" not in a for a in argv[1:]):
        sys.exit(__doc__)
    groups = []
    for arg in argv[1:]:
        name, dirs = arg.split("=", 1)
        rows = [r for d in dirs.split(",") if d for r in rounds(d)]
        if not rows:
            sys.exit(f"{name}: no rounds")
        groups.append((name, summary(rows), rows))
    print(
        f"{'group':<10}{'rounds':>7}{'req/s':>9}{'p99 ms':>8}{'cpu us/req':>12}"
        f"{'vs haproxy-plain cpu':>22}{'vs haproxy-jwt req/s':>22}"
    )
    for name, s, _ in groups:
        print(
            f"{name:<10}{s['n']:>7}{s['rps']:>9.0f}{s['p99']:>8.2f}{s['us']:>12.1f}"
            f"{s['rel']:>22.3f}{s['jwt']:>22.2f}"
        )
    if len(groups) >= 2:
        (a, x, ra), (b, y, rb) = groups[0], groups[1]
        pct = lambda new, old: (new / old - 1) * 100
        print(
            f"{b} against {a} (medians): cpu/req {pct(y['us'], x['us']):+.1f} %, "
            f"req/s {pct(y['rps'], x['rps']):+.1f} %, "
            f"cpu/req relative to haproxy-plain {pct(y['rel'], x['rel']):+.1f} %, "
            f"req/s relative to haproxy-jwt {pct(y['jwt'], x['jwt']):+.1f} %"
        )
        if len(ra) == len(rb):
            # The n-th round of one group beside the n-th of the other: with runs
            # alternated, the two were measured about a minute apart.
            cpu = sorted(pct(q[2], p[2]) for p, q in zip(ra, rb))
            rps = sorted(pct(q[0], p[0]) for p, q in zip(ra, rb))
            print(
                f"{b} against {a}, round by round ({len(cpu)} pairs): cpu/req median "
                f"{statistics.median(cpu):+.1f} % (quartiles {quartiles(cpu)}), req/s median "
                f"{statistics.median(rps):+.1f} % (quartiles {quartiles(rps)})"
            )


if __name__ == "__main__":
    main(sys.argv)
