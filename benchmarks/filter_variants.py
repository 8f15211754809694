"""Train the published Learn2PD filter and our variants on the same traces; compare on held-out prompts.

    python benchmarks/filter_variants.py --traces outputs/traces/tiny [--epochs 40]

Every filter is trained by `train_filter` (same split by prompt, same seed) and scored on the test
prompts: AUROC, and the false-accept rate (wrong predictions the filter would commit) at the recall the
baseline reaches at its inference threshold, and at recall 0.90 / 0.95. Lower false-accept rate at equal
recall = fewer accuracy-costing commits for the same speed.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from torchmetrics.functional.classification import binary_auroc

from learn2pd.filters.compare import false_accept_rate_at_recall
from learn2pd.filters.models import load_filter
from learn2pd.traces.store import load_traces
from learn2pd.trainers.train_filter import FilterDataModule, TrainFilterConfig, train_filter

EXTRA = ["confidence", "margin", "entropy", "masked", "stable", "pos_in_block", "pos_in_answer"]
VARIANTS = {
    "learn2pd (baseline)": {"kind": "learn2pd", "hidden": 32, "layers": 2},
    "positionwise conf+margin+entropy": {"kind": "positionwise", "features": ["confidence", "margin", "entropy"]},
    "positionwise all features": {"kind": "positionwise", "features": EXTRA},
}


@torch.no_grad()
def test_scores(traces: str, filter_dir: str, seed: int):
    net = load_filter(filter_dir).eval()
    data = FilterDataModule(traces, net.config.features, net.config.block_length, "filter", 4096, seed)
    data.setup()
    feats, labels, mask = data.splits["test"].tensors
    return torch.sigmoid(net(feats))[mask], labels[mask], net.config.threshold


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", default="outputs/traces/tiny")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--block-length", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rows, base_recall = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, fcfg) in enumerate(VARIANTS.items()):
            out = f"{tmp}/f{i}"
            cfg = TrainFilterConfig(traces=args.traces, out=out, epochs=args.epochs, seed=args.seed, wandb=False,
                                    log_dir=f"{tmp}/logs", filter={**fcfg, "block_length": args.block_length})
            start = time.perf_counter()
            metrics = train_filter(cfg, progress=False)
            seconds = time.perf_counter() - start
            prob, labels, threshold = test_scores(args.traces, out, args.seed)
            if base_recall is None:  # the baseline's operating point sets the recall everyone is compared at
                base_recall = float((prob[labels] > threshold).float().mean())
            rows.append((name, sum(p.numel() for p in load_filter(out).parameters()), seconds, metrics["test/auroc"],
                         *(false_accept_rate_at_recall(prob, labels, r)[0] for r in (base_recall, 0.90, 0.95))))
    # The untrained reference: the model's own confidence as the score (what threshold decoding uses).
    data = FilterDataModule(args.traces, ["confidence"], args.block_length, "filter", 4096, args.seed)
    data.setup()
    masked = sum(int(d.tensors[2].sum()) for d in data.splits.values())
    wrong = sum(int((d.tensors[2] & ~d.tensors[1]).sum()) for d in data.splits.values())
    feats, labels, mask = data.splits["test"].tensors
    conf, labels = feats[..., 0][mask], labels[mask]
    rows.append(("model confidence alone (no training)", 0, 0.0, float(binary_auroc(conf, labels.long())),
                 *(false_accept_rate_at_recall(conf, labels, r)[0] for r in (base_recall, 0.90, 0.95))))
    traces = load_traces(args.traces)
    steps, prompts = len(traces["steps"]), len(traces["sequences"])
    nfe = sum(traces["sequences"]["nfe"]) / prompts
    print(f"{args.traces}: {prompts} prompts, reference decode {nfe:.2f} forwards each; {steps} step rows "
          f"({steps / prompts:.2f} per prompt), {masked} still-masked positions over all steps, {wrong} not yet final")
    print(f"test prompts of {args.traces}; baseline recall at its threshold: {base_recall:.3f}")
    print(f"| filter | params | train s | test AUROC | FAR @ recall {base_recall:.3f} | FAR @ 0.90 | FAR @ 0.95 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, params, seconds, auroc, far_b, far_90, far_95 in rows:
        print(f"| {name} | {params} | {seconds:.0f} | {auroc:.4f} | {far_b:.4f} | {far_90:.4f} | {far_95:.4f} |")


if __name__ == "__main__":
    main()
