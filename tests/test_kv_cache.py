"""Fast-dLLM's prefix and dual KV caches: equal to the published functions (batch 1, temperature 0), and
batched with per-row progress (rows in different blocks, with different padding and End-of-Text cuts)."""

import pytest
import torch
from reference_impl import ref_generate_with_cache

from learn2pd.decoding.config import DecodeConfig, DecodeError
from learn2pd.decoding.engine import decode
from learn2pd.decoding.policies import FactorPolicy, ThresholdPolicy, VanillaPolicy
from learn2pd.models.spec import ModelSpec

VOCAB, MASK, EOS, DELIM = 58, 0, 1, 5
SPEC = ModelSpec("llada", mask_id=MASK, eos_id=EOS, pad_id=EOS, end_ids=(EOS, 7), delimiter_ids=(DELIM,))

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(spread_llada):
    return spread_llada


def _prompts(lengths, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(2, VOCAB, (n,), generator=g) for n in lengths]


def _pad(prompts):
    P = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), P), EOS, dtype=torch.long)
    mask = torch.zeros(len(prompts), P, dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, P - len(p):], mask[b, P - len(p):] = p, 1
    return ids, mask


CASES = [  # (engine policy, reference kwargs, steps)
    (ThresholdPolicy(0.9), dict(threshold=0.9), 32),
    (ThresholdPolicy(0.6), dict(threshold=0.6), 32),
    (FactorPolicy(1.0), dict(factor=1.0), 32),
    (VanillaPolicy(), {}, 32),
    (VanillaPolicy(), {}, 16),  # two tokens per step
]


@pytest.mark.parametrize("mode", ["prefix", "dual"])
@pytest.mark.parametrize("policy,ref_kw,steps", CASES, ids=lambda v: repr(v) if not isinstance(v, (dict, int)) else "")
@pytest.mark.parametrize("prompt_len,seed", [(9, 3), (14, 8)])
def test_cache_equals_fast_dllm(model, mode, policy, ref_kw, steps, prompt_len, seed):
    (prompt,) = _prompts([prompt_len], seed)
    kw = dict(gen_length=32, block_length=8, steps=steps)
    ref_x, ref_nfe, ref_commits = ref_generate_with_cache(model, prompt[None], mode, mask_id=MASK, **kw, **ref_kw)
    out = decode(model, SPEC, prompt[None], torch.ones(1, prompt_len, dtype=torch.long), policy,
                 DecodeConfig(cache=mode, **kw))
    assert out.sequences[0].tolist() == ref_x[0, prompt_len:].tolist()
    assert int(out.nfe[0]) == ref_nfe and out.commits[0] == ref_commits
    nocache = decode(model, SPEC, prompt[None], torch.ones(1, prompt_len, dtype=torch.long), policy,
                     DecodeConfig(**kw))
    assert int(out.positions[0]) < int(nocache.positions[0])  # later steps fed fewer positions


def test_the_cache_is_used(model):
    """Stale keys change some prediction on this random model: the cached path is not a full recompute."""
    prompts = _prompts([9, 14, 6, 11], 21)
    differ = 0
    for p in prompts:
        one = torch.ones(1, len(p), dtype=torch.long)
        a = decode(model, SPEC, p[None], one, "vanilla", DecodeConfig(gen_length=32, block_length=8, cache="dual"))
        b = decode(model, SPEC, p[None], one, "vanilla", DecodeConfig(gen_length=32, block_length=8))
        differ += int(not torch.equal(a.sequences, b.sequences))
    assert differ > 0


PLANS = ["threshold:tau=0.7", "localleap", "vanilla+eotp", "threshold:tau=0.5+adablock:b0=8,tau_d=0.0+eotp",
         "factor+eotp:drop=0"]


@pytest.mark.parametrize("mode", ["prefix", "dual"])
@pytest.mark.parametrize("plan", PLANS)
def test_batch_rows_equal_rows_alone(model, mode, plan):
    prompts = _prompts([5, 12, 8, 3], 17)
    ids, mask = _pad(prompts)
    cfg = DecodeConfig(gen_length=32, block_length=8, cache=mode)
    spec = SPEC if "adablock" not in plan else ModelSpec("llada", MASK, EOS, EOS, (EOS, 7), (9, 12, 20, 31))
    batch = decode(model, spec, ids, mask, plan, cfg)
    for b, p in enumerate(prompts):
        alone = decode(model, spec, p[None], torch.ones(1, len(p), dtype=torch.long), plan, cfg)
        assert batch.sequences[b].tolist() == alone.sequences[0].tolist(), b
        assert int(batch.nfe[b]) == int(alone.nfe[0]) and int(batch.positions[b]) == int(alone.positions[0])
    assert len(set(batch.nfe.tolist())) > 1  # rows progressed at their own pace
    assert not (batch.sequences == MASK).any()


def test_oracle_with_cache_reproduces_its_reference(model):
    ids, mask = _pad(_prompts([7, 10, 4], 2))
    cfg = DecodeConfig(gen_length=32, block_length=8, cache="dual")
    ref = decode(model, SPEC, ids, mask, "vanilla+eotp", cfg)
    orc = decode(model, SPEC, ids, mask, "oracle+eotp", cfg, reference=ref.sequences)
    assert torch.equal(orc.sequences, ref.sequences) and (orc.nfe < ref.nfe).all()


def _dream():
    from learn2pd.models.configuration_dream import DreamConfig
    from learn2pd.models.modeling_dream import DreamModel

    torch.manual_seed(3)
    cfg = DreamConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, mask_token_id=MASK, pad_token_id=EOS,
                      eos_token_id=EOS, initializer_range=0.5)
    return DreamModel(cfg).eval(), ModelSpec("dream", MASK, EOS, EOS, (EOS,), logit_shift=True)


@pytest.mark.parametrize("mode", ["prefix", "dual"])
@pytest.mark.parametrize("family", ["llada", "dream"])
def test_a_cached_step_right_after_the_refresh_recomputes_the_full_forward(model, mode, family):
    """Nothing changed since the block's full forward, so the cache holds exact keys and values: a cached
    step must give the full forward's logits at every fed block position. This checks which positions are
    fed, their RoPE positions under left padding, and (Dream) that the shift covers the block's first
    position, for which the cached step feeds the position before the block."""
    from learn2pd.decoding.runner import Feed, ModelRunner

    net, spec = (model, SPEC) if family == "llada" else _dream()
    ids, mask = _pad(_prompts([5, 9, 3], 8))
    B, P, G = ids.shape[0], ids.shape[1], 24
    g = torch.Generator().manual_seed(2)
    x = torch.cat([ids, torch.randint(2, VOCAB, (B, G), generator=g)], 1)
    x[:, P + 8:P + 16] = MASK  # the current block, positions 8..15, masked; the rest decoded
    attention = torch.cat([mask, torch.ones(B, G, dtype=torch.long)], 1)
    runner = ModelRunner(net, spec, cache=mode, batch=B, length=P + G)
    rows, live = torch.arange(B), torch.ones(B, G, dtype=torch.bool)
    start, end = torch.full((B,), 8), torch.full((B,), 16)
    feed = lambda first: Feed(rows, x, attention, P, live, start, end, torch.full((B,), first),  # noqa: E731
                              torch.full((B,), G))
    full, _ = runner.logits(feed(True))
    cached, fed = runner.logits(feed(False))
    block = torch.arange(8, 16).expand(B, 8)
    torch.testing.assert_close(cached.at(block), full.at(block), atol=1e-4, rtol=1e-4)
    want = (16 if mode == "dual" else G) - 8 + int(spec.logit_shift)
    assert fed.tolist() == [want] * B


def test_cache_refuses_what_it_cannot_do(model):
    ids = torch.randint(2, VOCAB, (1, 5))
    with pytest.raises(DecodeError, match="classifier-free guidance"):
        decode(model, SPEC, ids, torch.ones_like(ids), "vanilla", DecodeConfig(cfg_scale=1.0, cache="dual"))
    with pytest.raises(DecodeError, match="cache must be"):
        decode(model, SPEC, ids, torch.ones_like(ids), "vanilla", DecodeConfig(cache="triple"))

    class NoCache(torch.nn.Module):
        pass

    with pytest.raises(DecodeError, match="no KV-cache support"):
        decode(NoCache(), SPEC, ids, torch.ones_like(ids), "vanilla", DecodeConfig(cache="prefix"))
