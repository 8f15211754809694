"""What a trace collection holds, in counts (logged to W&B by `collect-traces`, printed by
`benchmarks/trace_stats.py`)."""

from __future__ import annotations

import numpy as np

from learn2pd.traces.store import load_traces


def trace_counts(traces_dir) -> dict:
    """What a trace collection holds: prompts, step rows, still-masked positions and the share of them whose
    prediction is not yet final (what a filter must reject), commits of a not-final prediction (the decoded
    plan's mistakes: on-policy traces only; a replay of the reference makes none), forwards per prompt."""
    ds = load_traces(traces_dir)
    steps, seqs = ds["steps"], ds["sequences"]
    masked = np.asarray(steps["masked"], dtype=bool)  # [rows, block]: blocks have one length per collection
    final = np.asarray(steps["label"], dtype=bool)
    committed = np.asarray(steps["committed"], dtype=bool)
    n_masked, n_prompts = int(masked.sum()), len(seqs)
    return {"prompts": n_prompts, "step_rows": len(steps), "masked_positions": n_masked,
            "not_final_share": float((masked & ~final).sum() / n_masked) if n_masked else 0.0,
            "wrong_commits": int((committed & ~final).sum()),
            "reference_correct_share": float(np.mean(seqs["correct"])) if n_prompts else 0.0,
            "reference_forwards_per_prompt": float(np.mean(seqs["nfe"])) if n_prompts else 0.0,
            # one row per prompt and recorded forward: the replay's forwards (the reference's in reference mode)
            "recorded_forwards_per_prompt": len(steps) / n_prompts if n_prompts else 0.0}
