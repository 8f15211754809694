"""The shipped tiny Dream: size, held-out accuracy on a fixed sample, its filters, and the two families
kept apart (a filter trained on one is refused on the other)."""

from pathlib import Path

import pytest
import torch

from learn2pd.decoding.engine import DecodeConfig, decode
from learn2pd.decoding.plan import make_plan
from learn2pd.evaluation.runner import evaluate
from learn2pd.tasks.suite import SHORT_FAMILIES, heldout_problems

ROOT = Path(__file__).resolve().parents[1]
DREAM = ROOT / "checkpoints" / "tiny-dream"
CFG = DecodeConfig(gen_length=64, block_length=32)


@pytest.fixture(scope="session")  # not recomputed when a worker interleaves other modules
def dream():
    from learn2pd.models.loading import load_model

    return load_model(DREAM)


@pytest.mark.xdist_group("tiny-dream")  # shares the module's dream on one worker
def test_tiny_dream_is_a_native_dream_within_limits(dream):
    from learn2pd.models.modeling_dream import DreamModel

    model, tok, spec = dream
    assert isinstance(model, DreamModel) and spec.family == "dream" and spec.logit_shift
    assert sum(f.stat().st_size for f in DREAM.iterdir()) <= 20 * 2**20
    assert spec.mask_id == tok.mask_token_id


@pytest.mark.xdist_group("tiny-dream")  # shares the module's dream on one worker
def test_tiny_dream_decodes_the_short_families(dream):
    model, tok, spec = dream
    plans = ["vanilla+eotp", "threshold:tau=0.9+eotp", "entropy:top_k=4+eotp", "threshold:tau=0.9+adablock+eotp"]
    problems = heldout_problems(SHORT_FAMILIES, n=30)  # 10 per family
    report = evaluate(model, tok, spec, problems, plans, CFG, batch_size=48, progress=False)
    by = {r["policy"]: r for r in report["results"]}
    assert by["vanilla+eotp"]["accuracy"] >= 90  # 99.0% on 96 problems when shipped
    assert by["threshold:tau=0.9+eotp"]["accuracy"] >= 90 and by["threshold:tau=0.9+eotp"]["nfe_mean"] < 4
    assert by["entropy:top_k=4+eotp"]["accuracy"] >= 85


@pytest.mark.xdist_group("tiny-dream")  # shares the module's dream on one worker
def test_filters_are_refused_across_families(dream, tiny):
    model, _, spec = dream
    llada, ltok, lspec = tiny
    ids = ltok(["sort 3 1\n"], return_tensors="pt").input_ids
    with pytest.raises(ValueError, match="trained on a 'llada' model, not 'dream'"):
        llada_filter = ROOT / "checkpoints" / "tiny-llada-filter"
        decode(model, spec, ids, ids.new_ones(ids.shape), f"learned:path={llada_filter}", CFG)
    dream_filter = ROOT / "checkpoints" / "tiny-dream-filter"
    with pytest.raises(ValueError, match="trained on a 'Dream' model, not 'llada'"):
        decode(llada, lspec, ids, ids.new_ones(ids.shape), f"learned:path={dream_filter}", CFG)
    # and the Dream filter runs on its own family
    out = decode(model, spec, ids, ids.new_ones(ids.shape), f"learned:path={dream_filter}+eotp", CFG)
    assert int(out.nfe[0]) < 8


@pytest.mark.xdist_group("tiny-dream")  # shares the module's dream on one worker
def test_learned_without_a_path_uses_the_decoded_familys_shipped_filter(dream):
    """`learned+eotp` names no filter: on the tiny Dream it loads the Dream's own filter and End-of-Text
    predictor, not the tiny LLaDA's (which would be refused), and decodes with them."""
    model, tok, spec = dream
    plan = make_plan("learned+eotp")
    plan.policy.check(CFG, spec)
    assert plan.policy.path == ROOT / "checkpoints" / "tiny-dream-filter"
    assert plan.policy.eot_path == ROOT / "checkpoints" / "tiny-dream-eot"
    assert plan.policy.filter.config.model_type.lower() == plan.policy.eot.config.model_type.lower() == "dream"
    ids = tok(["sort 3 1\n"], return_tensors="pt").input_ids
    named = decode(model, spec, ids, ids.new_ones(ids.shape), "learned:path=" + str(ROOT / "checkpoints" /
                   "tiny-dream-filter") + ",eot=" + str(ROOT / "checkpoints" / "tiny-dream-eot") + "+eotp", CFG)
    default = decode(model, spec, ids, ids.new_ones(ids.shape), "learned+eotp", CFG)
    assert torch.equal(named.sequences, default.sequences) and torch.equal(named.nfe, default.nfe)


@pytest.mark.xdist_group("tiny-dream")  # shares the module's dream on one worker
def test_shipped_dream_is_the_published_architecture(dream):
    """Its safetensors hold exactly the published Dream parameter names, and the re-implementation of the
    published modeling gives the same logits from them (left padding included)."""
    import torch
    from reference_impl import dream_param_names, ref_dream_forward
    from safetensors.torch import load_file

    model, tok, _ = dream
    weights = load_file(str(DREAM / "model.safetensors"))
    assert sorted(weights) == sorted(dream_param_names(model.config.num_hidden_layers))
    ids = torch.tensor([tok("sort 4 1 3\n").input_ids, tok("rev abcdef\n").input_ids[:9] + [0, 0]])
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    ids[1] = torch.roll(ids[1], 2)  # left-pad the second row
    with torch.no_grad():
        ours = model.float()(ids, attention_mask=mask).logits
    ref = ref_dream_forward(weights, model.config, ids, mask)
    torch.testing.assert_close(ours[mask.bool()], ref[mask.bool()], atol=1e-4, rtol=1e-4)
