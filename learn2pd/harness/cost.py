"""Decoding cost per lm-eval task: forwards (NFE) per sample, tokens per forward, tokens per second.

`tokens_per_forward` is `learn2pd evaluate`'s TPF: generated positions (gen length, EOS padding included) over
forwards. `tokens_per_s` counts as the Learn2PD paper does: the answer's tokens (before the first end token, no
EOS padding) over the time spent generating. Loglikelihood requests report their forwards separately (the
Monte-Carlo batches and, with `is_check_greedy`, one per continuation token).

A data-parallel run sums every figure over its ranks: samples, forwards and tokens are the whole run's (as
one process would count them), seconds are the processes' summed, so `tokens_per_s` is per process.
"""

from __future__ import annotations

from learn2pd.evaluation.runner import answer_tokens


class CostMeter:
    def __init__(self):
        self.tasks: dict[str, dict] = {}

    def _task(self, task: str) -> dict:
        return self.tasks.setdefault(task, {"samples": 0, "nfe": 0, "positions": 0, "generated_positions": 0,
                                            "answer_tokens": 0, "generation_s": 0.0, "model_calls": 0,
                                            "loglikelihood_requests": 0, "loglikelihood_forwards": 0,
                                            "loglikelihood_s": 0.0})

    def add_generation(self, task: str, out, gen_length: int, end_ids) -> None:
        t = self._task(task)
        t["samples"] += len(out.nfe)
        t["nfe"] += int(out.nfe.sum())
        t["positions"] += int(out.positions.sum())
        t["generated_positions"] += gen_length * len(out.nfe)
        t["answer_tokens"] += int(answer_tokens(out.sequences, end_ids).sum())
        t["generation_s"] += out.wall_time_s
        t["model_calls"] += out.model_calls

    def add_loglikelihood(self, task: str, forwards: int, seconds: float) -> None:
        t = self._task(task)
        t["loglikelihood_requests"] += 1
        t["loglikelihood_forwards"] += forwards
        t["loglikelihood_s"] += seconds

    @classmethod
    def total(cls, ranks: list[dict]) -> CostMeter:
        """One meter summing the `tasks` of every rank."""
        meter = cls()
        for tasks in ranks:
            for task, counts in tasks.items():
                row = meter._task(task)
                for key, value in counts.items():
                    row[key] += value
        return meter

    def summary(self) -> dict:
        """Per task: the totals and the per-sample figures."""
        out = {}
        for task, t in sorted(self.tasks.items()):
            row = dict(t)
            if t["samples"]:
                row.update(nfe_per_sample=t["nfe"] / t["samples"], positions_per_sample=t["positions"] / t["samples"],
                           answer_tokens_per_sample=t["answer_tokens"] / t["samples"],
                           tokens_per_forward=t["generated_positions"] / max(t["nfe"], 1),
                           tokens_per_s=t["answer_tokens"] / t["generation_s"] if t["generation_s"] > 0 else None)
            out[task] = row
        return out


def markdown(summary: dict) -> str:
    lines = ["| task | samples | NFE/sample | tokens/forward | tokens/s | answer tokens/sample |",
             "|---|---:|---:|---:|---:|---:|"]
    for task, r in summary.items():
        if r["samples"]:
            tps = f"{r['tokens_per_s']:.1f}" if r["tokens_per_s"] is not None else "-"
            lines.append(f"| {task} | {r['samples']} | {r['nfe_per_sample']:.2f} | {r['tokens_per_forward']:.2f} | "
                         f"{tps} | {r['answer_tokens_per_sample']:.1f} |")
    return "\n".join(lines)
