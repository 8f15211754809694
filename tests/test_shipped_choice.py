"""The list-family model (checkpoints/tiny-llada-choice): several right answers, where a confidence threshold
waits on every separator and the shipped learned filter does not (docs/block-length.md has the 200-problem
curves; these tests decode a small fixed sample)."""

from pathlib import Path

import pytest

from learn2pd.decoding.engine import DecodeConfig
from learn2pd.evaluation.runner import evaluate
from learn2pd.models.loading import load_model
from learn2pd.tasks.suite import heldout_problems

ROOT = Path(__file__).resolve().parents[1]
CHOICE = ROOT / "checkpoints" / "tiny-llada-choice"
FILTER = f"path={CHOICE}-filter,eot={CHOICE}-eot"


@pytest.mark.xdist_group("tiny-choice")
def test_the_learned_filter_commits_the_split_separators_a_threshold_waits_on(one_thread):
    model, tok, spec = load_model(CHOICE)
    assert sum(f.stat().st_size for f in CHOICE.iterdir()) <= 20 * 2**20
    plans = ["threshold:tau=0.7+eotp", f"learned:{FILTER},threshold=0.5+eotp"]
    problems = heldout_problems(("list",), n=30)
    report = evaluate(model, tok, spec, problems, plans, DecodeConfig(gen_length=64, block_length=32),
                      batch_size=30, progress=False)
    threshold, learned = report["results"]
    # 200 held-out problems: threshold 0.7 99.0% at 7.03 forwards (one per separator: each sits near 0.5),
    # the filter at 0.5 99.0% at 1.04
    assert threshold["nfe_mean"] >= 5.0 and threshold["accuracy"] >= 93.0
    assert learned["accuracy"] >= threshold["accuracy"] - 3.4  # at most one problem of 30 apart
    assert learned["nfe_mean"] <= 0.4 * threshold["nfe_mean"]
