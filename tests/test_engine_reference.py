"""The decoding engine and its policies against plain re-implementations of the public generate code.

A tiny random LLaDA with large init_std, so confidences are spread out (many near 1, many low) and the
threshold / factor rules make step-dependent decisions; temperature 0 throughout.
"""

from __future__ import annotations

import math

import pytest
import torch
from reference_impl import (
    hf_model_fn,
    ref_add_gumbel_noise,
    ref_fast_dllm_generate,
    ref_get_num_transfer_tokens,
    ref_llada_generate,
    ref_transfer_factor,
    ref_transfer_threshold,
)

from learn2pd.decoding.engine import DecodeConfig, decode
from learn2pd.decoding.policies import FactorPolicy, ThresholdPolicy, VanillaPolicy
from learn2pd.decoding.progress import RowProgress
from learn2pd.decoding.sampling import sample
from learn2pd.decoding.state import StepState
from learn2pd.models.spec import ModelSpec

VOCAB, MASK, EOS = 58, 0, 1
SPEC = ModelSpec("llada", mask_id=MASK, eos_id=EOS, pad_id=EOS, end_ids=(EOS,), context_length=None)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(spread_llada):
    return spread_llada


def make_prompts(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(2, VOCAB, (n,), generator=g) for n in lengths]


def left_pad(prompts):
    P = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), P), EOS, dtype=torch.long)
    mask = torch.zeros(len(prompts), P, dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, P - len(p):] = p
        mask[b, P - len(p):] = 1
    return ids, mask


def run(model, ids, mask, policy, **cfg):
    return decode(model, SPEC, ids, mask, policy, DecodeConfig(**cfg))


# ---------------------------------------------------------------- vanilla = LLaDA's generate

SCHEDULES = [  # (gen_length, block_length, steps)
    (16, 16, 16),  # one block, one token per step
    (16, 8, 8),  # two blocks, two tokens per step
    (24, 8, 6),  # three blocks, 2 steps each: 4 + 4
    (20, 10, 6),  # 3 steps per block of 10: 4, 3, 3 (remainder to the earliest steps)
    (32, 8, 32),  # four blocks, one token per step
    (16, 16, 5),  # 4, 3, 3, 3, 3
]


@pytest.mark.parametrize("gen_length,block_length,steps", SCHEDULES)
@pytest.mark.parametrize("lengths", [pytest.param([7], id="b1"), pytest.param([5, 11, 8], id="b3-leftpad")])
def test_vanilla_matches_llada_generate(model, gen_length, block_length, steps, lengths):
    ids, mask = left_pad(make_prompts(lengths, seed=len(lengths) + steps))
    ref_x, ref_nfe, ref_commits = ref_llada_generate(
        hf_model_fn(model), ids, attention_mask=mask if len(lengths) > 1 else None, steps=steps,
        gen_length=gen_length, block_length=block_length, mask_id=MASK)
    out = run(model, ids, mask, VanillaPolicy(), gen_length=gen_length, block_length=block_length, steps=steps)
    P = ids.shape[1]
    assert torch.equal(out.sequences, ref_x[:, P:])
    assert out.nfe.tolist() == [ref_nfe] * len(lengths) and out.model_calls == ref_nfe == steps
    assert out.commits == ref_commits
    assert not (out.sequences == MASK).any()
    assert len(out.sequences.unique()) > 3  # a non-degenerate output
    # the LLaDA repo takes the confidence softmax in the logits' dtype (float32 here), not float64: on
    # these inputs that makes no difference either
    up_x, _, _ = ref_llada_generate(
        hf_model_fn(model), ids, attention_mask=mask if len(lengths) > 1 else None, steps=steps,
        gen_length=gen_length, block_length=block_length, mask_id=MASK, softmax_dtype=None)
    assert torch.equal(up_x, ref_x)


@pytest.mark.parametrize("cfg_scale", [0.5, 2.0])
@pytest.mark.parametrize("lengths", [pytest.param([9], id="b1"), pytest.param([6, 10, 4], id="b3-leftpad")])
def test_vanilla_with_cfg_matches_llada_generate(model, cfg_scale, lengths):
    ids, mask = left_pad(make_prompts(lengths, seed=21))
    kw = dict(steps=8, gen_length=16, block_length=8)
    ref_x, ref_nfe, _ = ref_llada_generate(hf_model_fn(model), ids, attention_mask=mask if len(lengths) > 1 else None,
                                           cfg_scale=cfg_scale, mask_id=MASK, **kw)
    out = run(model, ids, mask, VanillaPolicy(), cfg_scale=cfg_scale, **kw)
    assert torch.equal(out.sequences, ref_x[:, ids.shape[1]:])
    assert out.nfe.tolist() == [ref_nfe] * len(lengths) and ref_nfe == 8
    # guidance changes the answer here, so the comparison above exercises the cfg path
    no_cfg, _, _ = ref_llada_generate(hf_model_fn(model), ids, attention_mask=mask if len(lengths) > 1 else None,
                                      mask_id=MASK, **kw)
    assert not torch.equal(no_cfg, ref_x)


def test_random_remasking_follows_the_reference_schedule(model):
    """Random remasking draws from a different RNG stream than the reference, so only the schedule (tokens
    per step) and the committed values (the argmax at commit time) can be compared."""
    ids, mask = left_pad(make_prompts([6, 9], seed=5))
    kw = dict(steps=9, gen_length=18, block_length=6)
    torch.manual_seed(0)
    ref_x, ref_nfe, ref_commits = ref_llada_generate(hf_model_fn(model), ids, attention_mask=mask,
                                                     remasking="random", mask_id=MASK, **kw)
    out = run(model, ids, mask, VanillaPolicy(), remasking="random", seed=3, **kw)
    assert out.commits == ref_commits == [[2] * 9] * 2
    assert out.nfe.tolist() == [ref_nfe] * 2
    assert not (out.sequences == MASK).any() and not (ref_x == MASK).any()
    low_conf = run(model, ids, mask, VanillaPolicy(), **kw)
    assert not torch.equal(out.sequences, low_conf.sequences)  # the remasking option is honoured


def test_schedule_matches_get_num_transfer_tokens():
    block = torch.zeros(3, 10, dtype=torch.bool)
    block[0, :10] = True
    block[1, :7] = True
    block[2, :3] = True
    ref = ref_get_num_transfer_tokens(block, 4)
    assert ref.tolist() == [[3, 3, 2, 2], [2, 2, 2, 1], [1, 1, 1, 0]]
    # the engine's schedule: RowProgress opens each row's block over these masks and steps through it
    progress = RowProgress(3, 10, 4, "cpu")
    rows = torch.arange(3)
    progress.open_blocks(rows, torch.full((3,), 10), block)
    ours = []
    for _ in range(4):
        ours.append(progress.quota(rows))
        progress.step += 1
    assert torch.equal(torch.stack(ours, 1), ref)


@pytest.mark.parametrize("chunk", [1 << 20, 3 * VOCAB, 1])
def test_chunked_confidence_is_bitwise_the_whole_softmax(monkeypatch, chunk):
    """The float64 work runs in chunks of positions and only where needed; ties in the argmax (the mask
    token among them) resolve as a float64 copy of the whole tensor does."""
    import learn2pd.decoding.sampling as sampling

    monkeypatch.setattr(sampling, "CHUNK_ELEMENTS", chunk)
    g = torch.Generator().manual_seed(3)
    logits = (3 * torch.randn(3, 20, VOCAB, generator=g)).round()  # integers: many exact ties
    logits[0, 4, MASK] = 100.0  # the mask token is the argmax here: the next best wins
    logits[1, 2, 7] = logits[1, 2, 9] = 50.0  # a tie: the first index wins
    need = torch.rand(3, 20, generator=g) < 0.5
    need[0, 4] = need[1, 2] = True
    tokens, conf = sample(logits, need, MASK)
    scores = logits.double().clone()
    scores[..., MASK] = float("-inf")
    ref_tokens = scores.argmax(-1)
    ref_conf = torch.softmax(logits.double(), -1).gather(-1, ref_tokens[..., None])[..., 0]
    assert torch.equal(tokens, ref_tokens) and int(tokens[1, 2]) == 7 and int(tokens[0, 4]) != MASK
    assert torch.equal(conf[need], ref_conf[need])
    assert (conf[~need] == 0).all()
    # bf16 logits: the argmax and the float64 softmax of the upcast values, as the reference computes them
    tokens16, conf16 = sample(logits.bfloat16(), need, MASK)
    assert torch.equal(tokens16, ref_tokens)
    ref16 = torch.softmax(logits.bfloat16().double(), -1).gather(-1, ref_tokens[..., None])[..., 0]
    assert torch.equal(conf16[need], ref16[need])


def test_gumbel_sampling_matches_reference_noise():
    """At temperature > 0 the engine samples exp(l) / (-log u)^T in float64 like the reference; with the same
    uniform draws both pick the same tokens, and the confidence is the un-noised softmax at that token."""
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(2, 12, VOCAB, generator=g)
    logits[..., MASK] = -50.0  # [MASK] is never a prediction (the engine may also exclude it explicitly)
    need = torch.ones(2, 12, dtype=torch.bool)
    for temperature in (0.5, 1.0):
        tokens, conf = sample(logits, need, MASK, temperature, generator=torch.Generator().manual_seed(7))
        torch.manual_seed(7)
        ref_tokens = ref_add_gumbel_noise(logits, temperature).argmax(-1)
        assert torch.equal(tokens, ref_tokens)
        ref_conf = torch.softmax(logits.double(), -1).gather(-1, ref_tokens[..., None])[..., 0]
        torch.testing.assert_close(conf, ref_conf, atol=0, rtol=0)
        assert not torch.equal(tokens, logits.argmax(-1))  # noise did something


# ---------------------------------------------------------------- threshold / factor = Fast-dLLM

FAST_SETTINGS = [  # (gen_length, block_length, steps)
    (32, 8, 32),
    (24, 24, 24),
    (32, 16, 8),  # steps < gen_length: ignored by threshold/factor decoding
]


def _check_fast(model, policy, ref_kw, gen_length, block_length, steps, prompt_len, seed):
    ids, mask = left_pad(make_prompts([prompt_len], seed=seed))
    ref_x, ref_nfe, ref_commits = ref_fast_dllm_generate(
        hf_model_fn(model), ids, steps=steps, gen_length=gen_length, block_length=block_length, mask_id=MASK,
        **ref_kw)
    out = run(model, ids, mask, policy, gen_length=gen_length, block_length=block_length, steps=steps)
    assert torch.equal(out.sequences, ref_x[:, ids.shape[1]:])
    assert int(out.nfe[0]) == ref_nfe and out.model_calls == ref_nfe
    assert out.commits[0] == ref_commits
    assert not (out.sequences == MASK).any()
    return ref_commits


@pytest.mark.parametrize("gen_length,block_length,steps", FAST_SETTINGS)
@pytest.mark.parametrize("tau", [0.5, 0.7, 0.9])
def test_threshold_matches_fast_dllm(model, tau, gen_length, block_length, steps):
    commits = _check_fast(model, ThresholdPolicy(tau), dict(threshold=tau), gen_length, block_length, steps,
                          prompt_len=9, seed=3)
    # not vacuous: some step commits several tokens (and so fewer forwards than tokens)
    assert max(commits) > 1 and len(commits) < gen_length


@pytest.mark.parametrize("gen_length,block_length,steps", FAST_SETTINGS)
@pytest.mark.parametrize("factor", [0.5, 1.0, 2.0])
def test_factor_matches_fast_dllm(model, factor, gen_length, block_length, steps):
    commits = _check_fast(model, FactorPolicy(factor), dict(factor=factor), gen_length, block_length, steps,
                          prompt_len=9, seed=3)
    assert max(commits) > 1 and len(commits) < gen_length


@pytest.mark.parametrize("prompt_len,seed", [(4, 11), (13, 12)])
def test_threshold_and_factor_other_prompts(model, prompt_len, seed):
    for policy, kw in ((ThresholdPolicy(0.8), dict(threshold=0.8)), (FactorPolicy(1.0), dict(factor=1.0))):
        _check_fast(model, policy, kw, 32, 8, 32, prompt_len, seed)


def _random_states(seed, rows=64, G=12):
    """Random candidate sets and confidences, with exact ties to thresholds and tiny gaps included."""
    g = torch.Generator().manual_seed(seed)
    conf = torch.rand(rows, G, generator=g, dtype=torch.float64)
    # push some rows towards 1 so long runs pass the factor thresholds
    conf[: rows // 2] = 1 - conf[: rows // 2] ** 4 * 0.3
    masked = torch.rand(rows, G, generator=g) < 0.8
    block = torch.zeros(rows, G, dtype=torch.bool)
    for r in range(rows):
        s = int(torch.randint(0, G // 2, (1,), generator=g))
        block[r, s:s + int(torch.randint(1, G, (1,), generator=g))] = True
    cand = masked & block
    for r in range(rows):  # at least one candidate per row, as the engine guarantees
        if not cand[r].any():
            masked[r] |= block[r]
    return conf, masked, block


def _state(conf, masked, block):
    B, G = conf.shape
    return StepState(conf, torch.zeros(B, G, dtype=torch.long), masked, block, torch.zeros(B, dtype=torch.long),
                     torch.ones(B, dtype=torch.long), torch.arange(B))


def _ref_conf(conf, cand):
    return torch.where(cand, conf, torch.tensor(float("-inf"), dtype=conf.dtype))


@pytest.mark.parametrize("seed", [0, 1])
def test_threshold_rule_matches_get_transfer_index(seed):
    conf, masked, block = _random_states(seed)
    conf[3, 2], conf[4, 1] = 0.7, 0.9  # exact equality with tau counts as passing in both
    for tau in (0.3, 0.7, 0.9, 1.0):
        s = _state(conf, masked, block)
        ours = ThresholdPolicy(tau).select(s) & s.candidates
        ref = ref_transfer_threshold(_ref_conf(conf, s.candidates), s.candidates, tau)
        assert torch.equal(ours, ref), tau


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_factor_rule_matches_get_transfer_index_dynamic(seed):
    conf, masked, block = _random_states(seed)
    for factor in (0.25, 0.5, 1.0, 2.0, 3.0):
        s = _state(conf, masked, block)
        ours = FactorPolicy(factor).select(s) & s.candidates
        ref = ref_transfer_factor(_ref_conf(conf, s.candidates), s.candidates, factor)
        assert torch.equal(ours, ref), factor


FACTOR_CASES = [
    # (confidences of the candidates, factor); thresholds for f=1 by rank: -, 2/3, 3/4, 4/5, 5/6
    ([0.2], 1.0),  # a single candidate is always committed
    ([0.99, 0.1], 1.0),  # the second (= last) fails -> the public code still commits both
    ([0.99, 0.9, 0.1], 1.0),  # only the last fails -> all three
    ([0.99, 0.9, 0.1, 0.05], 1.0),  # the third of four fails -> two
    ([0.99, 0.5, 0.99, 0.99], 1.0),  # ranks, not positions: sorted 0.99, 0.99, 0.99, 0.5 -> last fails -> all
    ([0.99, 0.6, 0.1, 0.05], 1.0),  # the second fails (not last) -> one
    ([0.99, 0.95, 0.9, 0.85, 0.2], 1.0),  # all but the last pass -> all five
    ([0.99, 0.95, 0.9, 0.7, 0.2], 1.0),  # the fourth fails -> three
    # 1 - 1/3 is 0.6666666666666667 in Python floats (the public code) but 0.6666666269 in float32:
    # 0.66666665 fails the second rank -> one token, not two
    ([0.99, 0.66666665, 0.1, 0.05], 1.0),
    ([0.99, 0.75, 0.1, 0.05, 0.01], 0.5),  # f=0.5: thresholds 5/6, 7/8 -> 0.75 fails second -> one
    ([1.0, 1.0, 1.0], 0.5),
]


@pytest.mark.parametrize("values,factor", FACTOR_CASES)
def test_factor_edge_cases(values, factor):
    G = len(values) + 2  # one committed position before and one position beyond the block
    conf = torch.tensor([0.999] + values + [0.999], dtype=torch.float64)[None]
    masked = torch.ones(1, G, dtype=torch.bool)
    masked[0, 0] = False
    block = torch.ones(1, G, dtype=torch.bool)
    block[0, -1] = False
    s = _state(conf, masked, block)
    ours = FactorPolicy(factor).select(s) & s.candidates
    ref = ref_transfer_factor(_ref_conf(conf, s.candidates), s.candidates, factor)
    assert torch.equal(ours, ref), (ours, ref)


@pytest.mark.parametrize("factor", [0.3, 0.5, 1.0, 1.5, 2.0])
def test_factor_thresholds_are_exact_at_the_boundary(factor):
    """Confidences one ulp either side of 1 - f / (n + 1) (Python float arithmetic, as in the public code)
    are decided as the public code decides them: thresholds must not be rounded to float32."""
    G = 8
    rows = []
    for n in range(2, G - 1):  # rank n (1-based) sits on its threshold; n < G so it is never the last
        t = 1 - factor / (n + 1)
        for c in (math.nextafter(t, -math.inf), t, math.nextafter(t, math.inf)):
            rows.append([0.9999 - 1e-6 * j for j in range(n - 1)] + [c] + [1e-3 * (G - j) for j in range(G - n)])
    conf = torch.tensor(rows, dtype=torch.float64)
    ones = torch.ones(conf.shape, dtype=torch.bool)
    s = _state(conf, ones, ones)
    ours = FactorPolicy(factor).select(s) & s.candidates
    ref = ref_transfer_factor(_ref_conf(conf, s.candidates), s.candidates, factor)
    assert torch.equal(ours.sum(-1), ref.sum(-1))
    assert torch.equal(ours, ref)


# ---------------------------------------------------------------- batching: rows independent

@pytest.mark.parametrize("policy", [ThresholdPolicy(0.7), ThresholdPolicy(0.9), FactorPolicy(1.0)], ids=repr)
def test_batched_rows_equal_each_row_alone(model, policy):
    prompts = make_prompts([5, 12, 8, 3], seed=17)
    ids, mask = left_pad(prompts)
    kw = dict(gen_length=32, block_length=8, steps=32)
    batch = run(model, ids, mask, policy, **kw)
    for b, p in enumerate(prompts):
        alone = run(model, p[None], torch.ones(1, len(p), dtype=torch.long), policy, **kw)
        assert torch.equal(batch.sequences[b], alone.sequences[0]), b
        assert int(batch.nfe[b]) == int(alone.nfe[0]) and batch.commits[b] == alone.commits[0]
    # rows progressed at their own pace (finished rows left the batch), so the test is not trivial
    assert len(set(batch.nfe.tolist())) > 1
    assert batch.model_calls == int(batch.nfe.max())
