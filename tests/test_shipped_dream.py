"""The shipped tiny Dream: size, held-out accuracy on a fixed sample, its filters, and the two families
kept apart (a filter trained on one is refused on the other)."""

from pathlib import Path

import pytest

from learn2pd.decoding.engine import DecodeConfig, decode
from learn2pd.evaluation.runner import evaluate
from learn2pd.tasks.suite import heldout_problems

ROOT = Path(__file__).resolve().parents[1]
DREAM = ROOT / "checkpoints" / "tiny-dream"
CFG = DecodeConfig(gen_length=64, block_length=32)


@pytest.fixture(scope="module")
def dream():
    from learn2pd.models.loading import load_model

    return load_model(DREAM)


def test_tiny_dream_is_a_native_dream_within_limits(dream):
    from learn2pd.models.modeling_dream import DreamModel

    model, tok, spec = dream
    assert isinstance(model, DreamModel) and spec.family == "dream" and spec.logit_shift
    assert sum(f.stat().st_size for f in DREAM.iterdir()) <= 20 * 2**20
    assert spec.mask_id == tok.mask_token_id


def test_tiny_dream_decodes_the_suite(dream):
    model, tok, spec = dream
    plans = ["vanilla+eotp", "threshold:tau=0.9+eotp", "entropy:top_k=4+eotp", "threshold:tau=0.9+adablock+eotp"]
    report = evaluate(model, tok, spec, heldout_problems(n=48), plans, CFG, batch_size=48, progress=False)
    by = {r["policy"]: r for r in report["results"]}
    assert by["vanilla+eotp"]["accuracy"] >= 90  # 99.0% on 96 problems when shipped
    assert by["threshold:tau=0.9+eotp"]["accuracy"] >= 90 and by["threshold:tau=0.9+eotp"]["nfe_mean"] < 4
    assert by["entropy:top_k=4+eotp"]["accuracy"] >= 85


def test_filters_are_refused_across_families(dream, tiny):
    model, _, spec = dream
    llada, ltok, lspec = tiny
    ids = ltok(["sort 3 1\n"], return_tensors="pt").input_ids
    with pytest.raises(ValueError, match="trained on a 'llada' model, not 'dream'"):
        decode(model, spec, ids, ids.new_ones(ids.shape), f"learned:path={ROOT / 'checkpoints' / 'tiny-llada-filter'}", CFG)
    dream_filter = ROOT / "checkpoints" / "tiny-dream-filter"
    with pytest.raises(ValueError, match="trained on a 'Dream' model, not 'llada'"):
        decode(llada, lspec, ids, ids.new_ones(ids.shape), f"learned:path={dream_filter}", CFG)
    # and the Dream filter runs on its own family
    out = decode(model, spec, ids, ids.new_ones(ids.shape), f"learned:path={dream_filter}+eotp", CFG)
    assert int(out.nfe[0]) < 8
