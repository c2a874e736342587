"""Replays fine-tuning judge rules on ``bench_strokes.py --trace --set anchor_drift=1`` logs.

Usage: ``python benchmarks/judge_rules.py K LOG...``. Per data set and style, over the logs (one
per stroke seed): the change of the other images' foreground IoU / AP@0.5 after the last
iteration with no judge, with the landed outline rule (drift at most 0.05), and with the drift
allowed up to ``K`` times what the held-out painting gained (docs/benchmarks.md); a Markdown table
and a summary per rule."""

import argparse
import collections
import re

ROW = re.compile(r"\| (\S+) \(\d+ images\) \| (\w):")
CHECK = re.compile(r"\|   check (\d+) \| \| \| \| ([\d.]+) \| \| ([\d.]+) \| \| ([\d.]+) \(held out (\S+), "
                   r"start on painted (\S+), outline drift (\S+)\)")


def _number(v):
    return None if v == "-" else float(v)


def parse(path):
    """The traced runs of one log: name, style and the checks (iteration, IoU, AP, score, held, drift)."""
    rows, cur = [], None
    for line in open(path):
        m = ROW.match(line)
        if m:
            cur = dict(name=m.group(1), style=m.group(2), checks=[])
            rows.append(cur)
            continue
        m = CHECK.match(line)
        if m and cur is not None:
            it, iou, ap, sc, held, _, drift = m.groups()
            cur["checks"].append(dict(it=int(it), iou=float(iou), ap=float(ap), score=float(sc),
                                      held=_number(held), drift=_number(drift)))
    return [r for r in rows if len(r["checks"]) > 1]


def pick(row, k, min_gain=0.02, anchor_drift=0.05):
    """The check the judge takes (the first is the start model) when the drift may reach
    ``max(anchor_drift, k * held-out gain)``."""
    checks = row["checks"]
    start = best = checks[0]
    for ch in checks[1:]:
        allowed = max(anchor_drift, k * ((ch["held"] or 0) - (start["held"] or 0)))
        if ch["drift"] is not None and ch["drift"] > allowed:
            continue
        if ch["score"] > start["score"] + min_gain and ch["score"] > best["score"]:
            best = ch
    return best


def main():
    ap = argparse.ArgumentParser(description="Replay fine-tuning judge rules on bench_strokes.py --trace logs.")
    ap.add_argument("k", type=float, help="the looser rule: drift allowed up to K times the held-out gain")
    ap.add_argument("logs", nargs="+", help="bench_strokes.py --trace --set anchor_drift=1 logs, one per seed")
    args = ap.parse_args()
    agg = collections.defaultdict(list)
    for f in args.logs:
        for r in parse(f):
            s0, last = r["checks"][0], r["checks"][-1]
            for rule, k in (("fixed", 0.0), ("gain", args.k)):
                b = pick(r, k)
                agg[(r["name"], r["style"], rule)].append((b["iou"] - s0["iou"], b["ap"] - s0["ap"], b is not s0))
            agg[(r["name"], r["style"], "last")].append((last["iou"] - s0["iou"], last["ap"] - s0["ap"], True))
    print(f"| data set | style | runs | 150 it, no judge: IoU / AP | fixed rule: taken, IoU / AP (worst IoU) | "
          f"drift <= max(0.05, {args.k} x gain): taken, IoU / AP (worst IoU) |")
    print("|---|---|---:|---|---|---|")
    total = collections.defaultdict(list)
    for n, s in sorted({(n, s) for n, s, _ in agg}):
        cells = []
        for rule in ("last", "fixed", "gain"):
            v = agg[(n, s, rule)]
            total[rule] += v
            mi, ma = sum(x[0] for x in v) / len(v), sum(x[1] for x in v) / len(v)
            worst, taken = min(x[0] for x in v), sum(x[2] for x in v)
            cells.append(f"{mi:+.3f} / {ma:+.3f}" if rule == "last" else f"{taken}, {mi:+.3f} / {ma:+.3f} ({worst:+.3f})")
        print(f"| {n} | {s} | {len(agg[(n, s, 'last')])} | " + " | ".join(cells) + " |")
    for rule in ("last", "fixed", "gain"):
        v = total[rule]
        print(f"{rule}: n={len(v)} taken={sum(x[2] for x in v)} mean IoU {sum(x[0] for x in v) / len(v):+.4f} "
              f"AP {sum(x[1] for x in v) / len(v):+.4f} worst {min(x[0] for x in v):+.3f} "
              f"below -0.01: {sum(x[0] < -0.01 for x in v)}")


if __name__ == "__main__":
    main()
