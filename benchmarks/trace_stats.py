"""What trace collections hold, side by side: the counts `collect-traces` logs to W&B.

    python benchmarks/trace_stats.py outputs/traces/tiny-op-b32 outputs/traces/tiny-op-b256 ...

Per collection: prompts, step rows, still-masked positions, the share of them not yet final (what a
filter must reject), wrong commits (an on-policy plan's own mistakes; a replay makes none), the
reference's accuracy and forwards, and the recorded forwards per prompt.
"""

from __future__ import annotations

import argparse

from learn2pd.traces.stats import trace_counts
from learn2pd.traces.store import read_metadata


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("traces", nargs="+", help="collection folders (collect-traces --out)")
    args = ap.parse_args()
    print("| traces | mode | plan | block | prompts | step rows | masked | not final % | wrong commits "
          "| reference acc % | recorded forwards/prompt |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for path in args.traces:
        meta, c = read_metadata(path), trace_counts(path)
        print(f"| {path} | {meta.get('mode')} | {meta.get('plan') or meta.get('reference_plan')} "
              f"| {meta['decoding']['block_length']} | {c['prompts']} | {c['step_rows']:,} | {c['masked_positions']:,} "
              f"| {100 * c['not_final_share']:.2f} | {c['wrong_commits']:,} | {100 * c['reference_correct_share']:.1f} "
              f"| {c['recorded_forwards_per_prompt']:.2f} |")


if __name__ == "__main__":
    main()
