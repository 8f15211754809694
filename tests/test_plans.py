"""LocalLeap, AdaBlock, EoTP and the oracle: rules on hand-made states, and faithfulness on a model."""

import pytest
import torch

from learn2pd.decoding.engine import DecodeConfig, decode
from learn2pd.decoding.plan import PolicySpecError, make_plan
from learn2pd.decoding.schedulers import AdaBlockScheduler
from learn2pd.decoding.state import StepState
from learn2pd.models import LLaDAConfig, LLaDAModelLM
from learn2pd.models.spec import ModelSpec
from tests.reference_policies import adablock_reference, localleap_reference

VOCAB, MASK, EOS = 24, 0, 1


@pytest.fixture(scope="module")
def peaky():
    """A random tiny LLaDA with large weights, so confidences spread over (0, 1)."""
    torch.manual_seed(0)
    cfg = LLaDAConfig(d_model=32, n_heads=2, n_layers=2, mlp_hidden_size=64, vocab_size=VOCAB, embedding_size=VOCAB,
                      mask_token_id=MASK, eos_token_id=EOS, pad_token_id=EOS, eot_token_id=None, init_std=1.0)
    return LLaDAModelLM(cfg).eval()


def _spec(delims=(5,)):
    return ModelSpec("llada", MASK, EOS, EOS, (EOS,), delims)


def _state(conf, masked=None):
    conf = torch.tensor([conf], dtype=torch.float64)
    G = conf.shape[1]
    m = torch.ones(1, G, dtype=torch.bool) if masked is None else torch.tensor([masked])
    return StepState(conf, torch.zeros(1, G, dtype=torch.long), m, torch.ones(1, G, dtype=torch.bool),
                     torch.zeros(1, dtype=torch.long), torch.ones(1, dtype=torch.long), torch.arange(1))


def test_localleap_anchor_neighbourhood_without_chaining():
    pol = make_plan("localleap:kappa=0.9,tau=0.75,radius=2").policy
    #        0     1     2     3     4     5     6     7
    conf = [0.95, 0.80, 0.10, 0.80, 0.80, 0.50, 0.20, 0.76]
    # anchor 0 -> neighbourhood 0..2: 1 (0.80) joins; 3 is outside (no chaining through 1); 7 is far
    assert pol.select(_state(conf)).nonzero()[:, 1].tolist() == [0, 1]
    # no anchor: plain threshold at kappa, i.e. only the forced top-1
    assert pol.select(_state([0.5, 0.8, 0.7])).nonzero()[:, 1].tolist() == [1]


def _delimiter_logits(tokens, conf, dtype=torch.float32):
    """Logits whose predicted token has probability `conf` (the rest on token 0), in `dtype`."""
    conf = torch.as_tensor(conf, dtype=torch.float64)
    logits = torch.full((*tokens.shape, 12), float("-inf"), dtype=torch.float64)
    logits.scatter_(-1, tokens[..., None], conf.log()[..., None])
    logits[..., 0] = (1 - conf).clamp_min(1e-300).log()
    return logits.to(dtype)


def _adablock(b0, tau_d, gen_length=16, delims=(9,)):
    sch = AdaBlockScheduler(b0=b0, tau_d=tau_d)
    sch.bind(DecodeConfig(gen_length=gen_length, block_length=b0 or 8), _spec(delims=delims))
    return sch


def test_adablock_scheduler_rules():
    sch = _adablock(4, 0.3)
    tokens = torch.tensor([[3, 3, 9, 3, 9, 3, 3, 3, 9, 3, 3, 3, 3, 3, 3, 3]])
    conf = torch.full((1, 16), 0.9, dtype=torch.float64)
    conf[0, 2], conf[0, 4], conf[0, 8] = 0.2, 0.6, 0.99  # 8 is the best but outside the 25% window (4)

    def end(start):
        return sch.block_end(tokens, conf, _delimiter_logits(tokens, conf), torch.tensor([start]),
                             torch.tensor([16])).tolist()

    # window [0, 4) holds one delimiter (2) at 0.2 < tau_d: default block b0
    assert end(0) == [4]
    conf[0, 2] = 0.5  # now confident enough: the block ends at it, inclusive
    assert end(0) == [3]
    # window [1, 5) holds 2 (0.5) and 4 (0.6): the most confident wins
    assert end(1) == [5]
    assert end(14) == [16]  # capped by what remains
    assert sch.horizon(torch.tensor([0, 14]), torch.tensor([16, 16])).tolist() == [4, 16]


def test_adablock_delimiter_confidence_is_taken_in_the_logits_dtype():
    """As published: exp(logit - logsumexp) in the model's dtype. In bf16 two near-certain delimiters both
    saturate to 1.0 and the first wins; a float64 softmax would pick the later, more confident one."""
    sch = _adablock(8, 0.3, gen_length=32)
    tokens = torch.full((1, 32), 3)
    tokens[0, 2] = tokens[0, 5] = 9
    conf = torch.full((1, 32), 0.5, dtype=torch.float64)
    conf[0, 2], conf[0, 5] = 0.9999, 0.999999
    start, gen_end = torch.tensor([0]), torch.tensor([32])
    assert sch.block_end(tokens, conf, _delimiter_logits(tokens, conf, torch.bfloat16), start, gen_end).tolist() == [3]
    assert sch.block_end(tokens, conf, _delimiter_logits(tokens, conf), start, gen_end).tolist() == [6]


def test_adablock_default_block_follows_the_block_length():
    sch = AdaBlockScheduler(tau_d=1.0)  # no delimiter is ever confident enough: always the default block
    sch.bind(DecodeConfig(gen_length=32, block_length=16), _spec())
    tokens, conf = torch.full((1, 32), 3), torch.full((1, 32), 0.5, dtype=torch.float64)
    assert sch.block_end(tokens, conf, _delimiter_logits(tokens, conf), torch.tensor([0]),
                         torch.tensor([32])).tolist() == [16]
    assert make_plan("adablock").describe() == "threshold:tau=0.9+adablock"  # b0 is not fixed in the spec


def test_plan_parsing():
    plan = make_plan("localleap:radius=2+adablock:b0=16+eotp")
    assert plan.policy.radius == 2 and plan.scheduler.b0 == 16 and plan.eotp
    assert make_plan("adablock").policy.tau == 0.9  # AdaBlock alone runs on threshold decoding
    with pytest.raises(PolicySpecError, match="two commit policies"):
        make_plan("threshold+localleap")


@pytest.mark.parametrize("kappa,tau,radius", [(0.9, 0.75, 4), (0.6, 0.3, 2)])
def test_localleap_matches_reference_loop(peaky, kappa, tau, radius):
    torch.manual_seed(1)
    prompt = torch.randint(2, VOCAB, (1, 6))
    want, want_nfe = localleap_reference(peaky, prompt, 32, 16, MASK, kappa, tau, radius)
    out = decode(peaky, _spec(), prompt, torch.ones_like(prompt), f"localleap:kappa={kappa},tau={tau},radius={radius}",
                 DecodeConfig(gen_length=32, block_length=16))
    assert out.sequences[0].tolist() == want.tolist()
    assert int(out.nfe[0]) == want_nfe
    assert want_nfe < 32  # it really decoded in parallel


@pytest.mark.parametrize("tau_d", [0.0, 0.3])
def test_adablock_matches_reference_loop(peaky, tau_d):
    torch.manual_seed(2)
    prompt = torch.randint(2, VOCAB, (1, 5))
    # the most frequent first-step prediction as the delimiter, so delimiters really occur
    first = peaky(torch.cat([prompt, torch.full((1, 32), MASK)], 1)).logits[0, 5:].argmax(-1)
    delim = int(first.mode().values)
    want, want_nfe, blocks = adablock_reference(peaky, prompt, 32, 8, MASK, (delim,), tau_d, tau=0.5)
    plan = f"threshold:tau=0.5+adablock:b0=8,tau_d={tau_d}"
    out = decode(peaky, _spec((delim,)), prompt, torch.ones_like(prompt), plan,
                 DecodeConfig(gen_length=32, block_length=8))
    assert out.sequences[0].tolist() == want.tolist()
    assert int(out.nfe[0]) == want_nfe
    if tau_d == 0.0:
        assert any(b != 8 for b in blocks)  # blocks really adapted


@pytest.mark.parametrize("plan", ["localleap", "threshold:tau=0.5+adablock:b0=8", "vanilla+eotp", "threshold+eotp"])
def test_batch_rows_equal_single_rows(peaky, plan):
    torch.manual_seed(3)
    prompts = [torch.randint(2, VOCAB, (n,)) for n in (3, 7, 5)]
    width = max(len(p) for p in prompts)
    ids = torch.full((3, width), EOS)
    mask = torch.zeros(3, width, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):], mask[i, width - len(p):] = p, 1
    cfg = DecodeConfig(gen_length=32, block_length=8)
    batch = decode(peaky, _spec(), ids, mask, plan, cfg)
    for i, p in enumerate(prompts):
        one = decode(peaky, _spec(), p[None], torch.ones(1, len(p), dtype=torch.long), plan, cfg)
        assert batch.sequences[i].tolist() == one.sequences[0].tolist()
        assert int(batch.nfe[i]) == int(one.nfe[0])


def test_eotp_cuts_work_and_counts_it(peaky):
    torch.manual_seed(4)
    prompt = torch.randint(2, VOCAB, (2, 6))
    cfg = DecodeConfig(gen_length=64, block_length=16)
    spec = ModelSpec("llada", MASK, EOS, EOS, (EOS, 7, 11), ())  # several end ids so a cut surely happens
    full = decode(peaky, spec, prompt, torch.ones_like(prompt), "vanilla", cfg)
    cut = decode(peaky, spec, prompt, torch.ones_like(prompt), "vanilla+eotp", cfg)
    assert (cut.nfe < full.nfe).all()
    assert (cut.positions < full.positions).all()
    assert int(full.positions[0]) == int(full.nfe[0]) * (6 + 64)  # no cut: every forward sees the whole row
    for r, row in enumerate(cut.sequences):
        ends = [i for i, t in enumerate(row.tolist()) if t in spec.end_ids]
        assert ends and all(t == EOS for t in row[ends[0] + 1:].tolist())  # EOS after the first end token
        assert MASK not in row.tolist()
        # every position up to the cut was committed once, the end token EoTP writes at the cut included
        assert sum(cut.commits[r]) == ends[0] + 1


def test_oracle_reproduces_reference_with_fewer_forwards(peaky):
    torch.manual_seed(5)
    prompt = torch.randint(2, VOCAB, (3, 6))
    cfg = DecodeConfig(gen_length=32, block_length=16)
    ref = decode(peaky, _spec(), prompt, torch.ones_like(prompt), "vanilla", cfg)
    orc = decode(peaky, _spec(), prompt, torch.ones_like(prompt), "oracle", cfg, reference=ref.sequences)
    assert torch.equal(orc.sequences, ref.sequences)
    assert (orc.nfe < ref.nfe).all()
    with pytest.raises(ValueError, match="reference"):
        decode(peaky, _spec(), prompt, torch.ones_like(prompt), "oracle", cfg)


def test_eotp_keeping_the_cut_positions_saves_forwards_not_positions(peaky):
    torch.manual_seed(4)
    prompt = torch.randint(2, VOCAB, (2, 6))
    cfg = DecodeConfig(gen_length=64, block_length=16)
    spec = ModelSpec("llada", MASK, EOS, EOS, (EOS, 7, 11), ())
    full = decode(peaky, spec, prompt, torch.ones_like(prompt), "vanilla", cfg)
    kept = decode(peaky, spec, prompt, torch.ones_like(prompt), "vanilla+eotp:drop=0", cfg)
    assert make_plan("vanilla+eotp:drop=0").describe() == "vanilla+eotp:drop=0"
    assert (kept.nfe < full.nfe).all()  # no block past the end runs
    for r in range(2):  # but every forward still sees the whole row, the cut part as EOS
        assert int(kept.positions[r]) == int(kept.nfe[r]) * (6 + 64)
        ends = [i for i, t in enumerate(kept.sequences[r].tolist()) if t in spec.end_ids]
        assert ends and all(t == EOS for t in kept.sequences[r, ends[0] + 1:].tolist())
    with pytest.raises(PolicySpecError, match="eotp:drop=0"):
        make_plan("vanilla+eotp:keep=1")


SPECS = ["vanilla", "vanilla+eotp:drop=0", "threshold:tau=0.7+eotp", "factor:factor=2.0", "oracle+eotp",
         "localleap:kappa=0.8,tau=0.6,radius=2+adablock:b0=16,tau_d=0.4+eotp", "adablock", "adablock:window=0.5"]


@pytest.mark.parametrize("spec", SPECS)
def test_describe_round_trips(peaky, spec):
    plan = make_plan(spec)
    again = make_plan(plan.describe())
    assert again.describe() == plan.describe() and plan.label == spec
    assert type(again.policy) is type(plan.policy) and plan.policy.params() == again.policy.params()
    if plan.policy.needs_reference:
        return
    torch.manual_seed(6)
    prompt = torch.randint(2, VOCAB, (2, 5))
    cfg = DecodeConfig(gen_length=32, block_length=8)
    a = decode(peaky, _spec(), prompt, torch.ones_like(prompt), plan, cfg)
    b = decode(peaky, _spec(), prompt, torch.ones_like(prompt), again, cfg)
    assert torch.equal(a.sequences, b.sequences) and torch.equal(a.nfe, b.nfe)


def test_bad_spec_values_name_the_parameter():
    with pytest.raises(PolicySpecError, match="tau must be a number, got 'abc'"):
        make_plan("threshold:tau=abc")
    with pytest.raises(PolicySpecError, match="learned"):  # the list of choices names every policy
        make_plan("greedy")
    with pytest.raises(PolicySpecError, match="empty plan"):
        make_plan(" ")
