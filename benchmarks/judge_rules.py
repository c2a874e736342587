"""Replays fine-tuning judge rules on ``bench_strokes.py --trace --set anchor_drift=1`` logs.

Usage: ``python benchmarks/judge_rules.py K LOG...``. Per data set and style, over the logs (one
per stroke seed): the change of the other images' foreground IoU / AP@0.5 after the last
iteration with no judge, with the fixed outline rule (drift at most 0.05, the default until
2026-12-07), and with the drift allowed up to ``K`` times what the held-out painting gained
(``TrainingConfig.anchor_drift_per_gain``, 0.5 by default; docs/benchmarks.md); a Markdown table
and a summary per rule.

``--mixed LOG...``: logs of the same runs with ``--set mix_with_start=S`` (the same strokes and
training; the checks score the mixed weights) instead: the fine-tuned and the mixed weights, each
with no judge and with the landed rule, and the landed rule choosing among both."""

import argparse
import collections
import re

from napari_unet.training.holdout import allowed_drift

SEED = re.compile(r"settings: .*, seed (\d+),")
ROW = re.compile(r"\| (\S+) \(\d+ images\) \| (\w):")
CHECK = re.compile(r"\|   check (\d+) \| \| \| \| ([\d.]+) \| \| ([\d.]+) \| \| ([\d.]+) \(held out (\S+), "
                   r"start on painted (\S+), outline drift (\S+)\)")


def _number(v):
    return None if v == "-" else float(v)


def parse(path):
    """The traced runs of one log: name, style and the checks (iteration, IoU, AP, score, held, drift)."""
    rows, cur, seed = [], None, None
    for line in open(path):
        m = SEED.match(line)
        if m:
            seed = int(m.group(1))
            continue
        m = ROW.match(line)
        if m:
            cur = dict(name=m.group(1), style=m.group(2), seed=seed, checks=[])
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
        allowed = allowed_drift(ch["held"], start["held"], anchor_drift, k)  # what the judge allows
        if ch["drift"] is not None and ch["drift"] > allowed:
            continue
        if ch["score"] > start["score"] + min_gain and ch["score"] > best["score"]:
            best = ch
    return best


def _change(row, check):
    """(IoU change, AP change, a fine-tuned check taken) of ``check`` against ``row``'s start model."""
    s0 = row["checks"][0]
    return check["iou"] - s0["iou"], check["ap"] - s0["ap"], check["it"] != 0


def _summary(rule, v):
    return (f"{rule}: n={len(v)} taken={sum(x[2] for x in v)} mean IoU {sum(x[0] for x in v) / len(v):+.4f} "
            f"AP {sum(x[1] for x in v) / len(v):+.4f} worst {min(x[0] for x in v):+.3f} "
            f"below -0.01: {sum(x[0] < -0.01 for x in v)}")


def _cell(v, taken=True):
    mi, ma = sum(x[0] for x in v) / len(v), sum(x[1] for x in v) / len(v)
    if not taken:
        return f"{mi:+.3f} / {ma:+.3f}"
    return f"{sum(x[2] for x in v)}, {mi:+.3f} / {ma:+.3f} ({min(x[0] for x in v):+.3f})"


def compare_mixed(logs, mixed):
    """The table of ``--mixed``: runs present (with every check) in both sets of logs."""
    ref = {(r["seed"], r["name"], r["style"]): r for f in logs for r in parse(f)}
    rules = ("fine-tuned, no judge", "fine-tuned, judge", "mixed, no judge", "mixed, judge", "judge on both")
    agg, total = collections.defaultdict(list), collections.defaultdict(list)
    for f in mixed:
        for m in parse(f):
            r = ref.get((m["seed"], m["name"], m["style"]))
            if r is None or len(m["checks"]) != len(r["checks"]):
                continue
            both = dict(checks=r["checks"] + m["checks"][1:])
            got = (r["checks"][-1], pick(r, 0.0), m["checks"][-1], pick(m, 0.0), pick(both, 0.0))
            for rule, ch in zip(rules, got):
                agg[(m["name"], m["style"], rule)].append(_change(r, ch))
                total[rule].append(_change(r, ch))
    print("| data set | style | runs | " + " | ".join(rules) + " |")
    print("|---|---|---:|" + "---|" * len(rules))
    for n, s in sorted({(n, s) for n, s, _ in agg}):
        cells = [_cell(agg[(n, s, rule)], "no judge" not in rule) for rule in rules]
        print(f"| {n} | {s} | {len(agg[(n, s, rules[0])])} | " + " | ".join(cells) + " |")
    for rule in rules:
        print(_summary(rule, total[rule]))


def main():
    ap = argparse.ArgumentParser(description="Replay fine-tuning judge rules on bench_strokes.py --trace logs.")
    ap.add_argument("k", type=float, help="the looser rule: drift allowed up to K times the held-out gain")
    ap.add_argument("logs", nargs="+", help="bench_strokes.py --trace --set anchor_drift=1 logs, one per seed")
    ap.add_argument("--mixed", nargs="+", metavar="LOG",
                    help="the same runs with --set mix_with_start=S: compare the mixed weights instead")
    args = ap.parse_args()
    if args.mixed:
        compare_mixed(args.logs, args.mixed)
        return
    agg = collections.defaultdict(list)
    for f in args.logs:
        for r in parse(f):
            for rule, k in (("fixed", 0.0), ("gain", args.k)):
                agg[(r["name"], r["style"], rule)].append(_change(r, pick(r, k)))
            agg[(r["name"], r["style"], "last")].append(_change(r, r["checks"][-1]))
    print(f"| data set | style | runs | 150 it, no judge: IoU / AP | fixed rule: taken, IoU / AP (worst IoU) | "
          f"drift <= max(0.05, {args.k} x gain): taken, IoU / AP (worst IoU) |")
    print("|---|---|---:|---|---|---|")
    total = collections.defaultdict(list)
    for n, s in sorted({(n, s) for n, s, _ in agg}):
        for rule in ("last", "fixed", "gain"):
            total[rule] += agg[(n, s, rule)]
        cells = [_cell(agg[(n, s, rule)], rule != "last") for rule in ("last", "fixed", "gain")]
        print(f"| {n} | {s} | {len(agg[(n, s, 'last')])} | " + " | ".join(cells) + " |")
    for rule in ("last", "fixed", "gain"):
        print(_summary(rule, total[rule]))

if __name__ == "__main__":
    main()
