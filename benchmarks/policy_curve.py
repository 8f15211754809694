"""Window means of a train-policy run's curve (LOG_DIR/curve.csv): reward, accuracy, NFE and entropy.

    python benchmarks/policy_curve.py runs/policy/tiny/curve.csv --every 10

Iterations draw new prompts, so one iteration's figures are noisy; docs/rl_policy.md quotes these means.
"""

from __future__ import annotations

import argparse
import csv

COLUMNS = ("reward", "accuracy", "nfe", "entropy")


def window_means(rows: list[dict], every: int) -> list[dict]:
    out = []
    for start in range(0, len(rows), every):
        window = rows[start:start + every]
        out.append({"first": int(window[0]["iteration"]), "last": int(window[-1]["iteration"]),
                    **{c: sum(float(r[c]) for r in window) / len(window) for c in COLUMNS}})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("curve", help="LOG_DIR/curve.csv of train-policy")
    ap.add_argument("--every", type=int, default=10, help="iterations per window (default 10)")
    args = ap.parse_args()
    with open(args.curve, newline="") as f:
        rows = list(csv.DictReader(f))
    print("| iterations | reward | accuracy % | NFE | entropy |\n|---|---:|---:|---:|---:|")
    for w in window_means(rows, args.every):
        print(f"| {w['first']}-{w['last']} | {w['reward']:.3f} | {w['accuracy']:.1f} | {w['nfe']:.2f} | "
              f"{w['entropy']:.3f} |")


if __name__ == "__main__":
    main()
