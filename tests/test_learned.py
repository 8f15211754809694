"""The learned policy: published semantics at the extremes, fallbacks, stability tracking, checks."""

import pytest
import torch

from learn2pd.decoding.engine import DecodeConfig, decode
from learn2pd.decoding.plan import make_plan
from learn2pd.decoding.policies.learned import LearnedPolicy
from learn2pd.filters.models import FilterConfig, build_filter
from learn2pd.models import LLaDAConfig, LLaDAModelLM
from learn2pd.models.spec import ModelSpec

SPEC = ModelSpec("llada", 0, 1, 1, (1,), (5,))


@pytest.fixture(scope="module")
def model(small_llada):
    return small_llada


@pytest.fixture(scope="module")
def filters(tmp_path_factory):
    root = tmp_path_factory.mktemp("filters")
    torch.manual_seed(0)
    build_filter(FilterConfig(block_length=8, hidden=8, model_type="llada")).save_pretrained(root / "l2pd")
    build_filter(FilterConfig(kind="positionwise", block_length=8, hidden=8, model_type="llada",
                              features=["confidence", "margin", "stable", "masked"])).save_pretrained(root / "pw")
    build_filter(FilterConfig(block_length=8, hidden=8, model_type="Dream")).save_pretrained(root / "dream")
    return root


def _run(model, plan, n=3, gen=32, blk=8):
    torch.manual_seed(1)
    ids = torch.randint(2, 20, (n, 6))
    return decode(model, SPEC, ids, torch.ones_like(ids), plan, DecodeConfig(gen_length=gen, block_length=blk))


def test_filter_that_never_accepts_is_vanilla(model, filters):
    van = _run(model, "vanilla")
    lrn = _run(model, f"learned:path={filters / 'l2pd'},threshold=1.0")
    assert torch.equal(lrn.sequences, van.sequences) and torch.equal(lrn.nfe, van.nfe)


def test_filter_that_accepts_everything_finishes_each_block_in_one_step(model, filters):
    out = _run(model, f"learned:path={filters / 'l2pd'},threshold=0.0")
    assert out.nfe.tolist() == [4, 4, 4]  # 32 / 8 blocks, one forward each


def test_fallbacks_add_what_the_filter_misses(model, filters):
    never = f"learned:path={filters / 'l2pd'},threshold=1.0"
    for fb in ("threshold:tau=0.5", "localleap"):
        alone, with_filter = _run(model, fb), _run(model, f"{never}+{fb}")
        assert torch.equal(alone.sequences, with_filter.sequences) and torch.equal(alone.nfe, with_filter.nfe)


def test_live_stability_equals_the_trace_computation(model, filters):
    """`stable` as the policy tracks it step by step equals `stable_counts` over the recorded trace rows
    (what the filter trains on), and really counts (some prediction stays put for several steps)."""
    from learn2pd.filters.features import stable_counts

    policy = make_plan(f"learned:path={filters / 'pw'},threshold=0.99").policy
    rows = {"pid": [], "block": [], "step": [], "token": [], "live": []}

    def observe(state, commit):
        win = state.block_window(8)
        rows["pid"] += state.rows.tolist()
        rows["block"] += (win.start // 8).tolist()
        rows["step"] += state.step_in_block.tolist()
        rows["token"].append(win.take(state.tokens))
        rows["live"].append(win.take(policy._stable[state.rows, :state.tokens.shape[1]]))

    torch.manual_seed(1)
    ids = torch.randint(2, 20, (3, 6))
    decode(model, SPEC, ids, torch.ones_like(ids), policy, DecodeConfig(gen_length=32, block_length=8),
           observer=observe)
    order = sorted(range(len(rows["pid"])), key=lambda i: (rows["pid"][i], rows["block"][i], rows["step"][i]))
    tokens, live = torch.cat(rows["token"])[order], torch.cat(rows["live"])[order]
    pick = lambda k: [rows[k][i] for i in order]  # noqa: E731
    assert torch.equal(stable_counts(pick("pid"), pick("block"), pick("step"), tokens), live)
    assert int(live.max()) >= 2


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
def test_batch_rows_equal_single_rows(model, filters, cache):
    # the pw filter doubles as End-of-Text predictor (the shipped one is for blocks of 32)
    plan = f"learned:path={filters / 'pw'},threshold=0.6,eot={filters / 'pw'}+localleap+eotp"
    torch.manual_seed(1)
    ids = torch.randint(2, 20, (3, 6))
    cfg = DecodeConfig(gen_length=32, block_length=8, cache=cache)
    batch = decode(model, SPEC, ids, torch.ones_like(ids), plan, cfg)
    for i in range(3):
        one = decode(model, SPEC, ids[i:i + 1], torch.ones(1, 6, dtype=torch.long), plan, cfg)
        assert one.sequences[0].tolist() == batch.sequences[i].tolist() and int(one.nfe[0]) == int(batch.nfe[i])


def test_mismatched_filters_are_refused(model, filters):
    with pytest.raises(ValueError, match="blocks of 8"):
        _run(model, f"learned:path={filters / 'l2pd'}", blk=16)
    with pytest.raises(ValueError, match="trained on a 'Dream' model"):
        _run(model, f"learned:path={filters / 'dream'}")
    with pytest.raises(FileNotFoundError, match="train-filter"):
        LearnedPolicy.from_pretrained(filters / "missing")


def test_a_short_last_block_keeps_its_last_position(filters):
    """Block of 3 at the row's end, filter block 8: the padding must not overwrite the last position."""
    from learn2pd.decoding.state import StepState

    policy = LearnedPolicy.from_pretrained(filters / "l2pd", threshold=0.0)  # accepts every position
    policy.check(DecodeConfig(gen_length=32, block_length=8), SPEC)
    width = 10
    block = torch.arange(width)[None] >= 7
    state = StepState(torch.full((1, width), 0.5), torch.full((1, width), 3), torch.ones(1, width, dtype=torch.bool),
                      block, torch.zeros(1, dtype=torch.long), torch.ones(1, dtype=torch.long), torch.arange(1))
    assert policy.select(state)[0].tolist() == block[0].tolist()


def test_confidence_floor_vetoes_the_filters_accepts(model, filters):
    # a filter that accepts everything, floored at 0.3 with the vanilla fallback, is threshold decoding at 0.3
    floored = _run(model, f"learned:path={filters / 'l2pd'},threshold=0.0,floor=0.3")
    ref = _run(model, "threshold:tau=0.3")
    assert torch.equal(floored.sequences, ref.sequences) and torch.equal(floored.nfe, ref.nfe)
    assert floored.nfe.sum() > _run(model, f"learned:path={filters / 'l2pd'},threshold=0.0").nfe.sum()


@pytest.mark.parametrize("spec", ["learned:path={pw},threshold=0.7",
                                  "learned:path={pw},floor=0.5,eot={pw}+localleap+eotp",
                                  "learned:path={l2pd},eot={pw},eot_threshold=0.3+threshold:tau=0.8+eotp"])
def test_learned_plans_describe_round_trips(model, filters, spec):
    plan = make_plan(spec.format(pw=filters / "pw", l2pd=filters / "l2pd"))
    again = make_plan(plan.describe())
    assert again.describe() == plan.describe()
    a, b = _run(model, plan), _run(model, again)
    assert torch.equal(a.sequences, b.sequences) and torch.equal(a.nfe, b.nfe)


@pytest.mark.parametrize("eotp", [False, True])
def test_a_hand_built_plan_describes_itself_back(model, filters, eotp):
    """DecodingPlan(LearnedPolicy(...)) without a predictor stays without one when its spec is parsed back,
    even with +eotp, where a spec naming no `eot=` loads the shipped End-of-Text predictor."""
    from learn2pd.decoding.plan import DecodingPlan

    plan = DecodingPlan(LearnedPolicy.from_pretrained(filters / "pw", threshold=0.6, fallback="threshold:tau=0.8"),
                        eotp=eotp)
    again = make_plan(plan.describe())
    assert again.policy.eot is None and again.eotp == eotp and again.describe() == plan.describe()
    a, b = _run(model, plan), _run(model, again)
    assert torch.equal(a.sequences, b.sequences) and torch.equal(a.nfe, b.nfe)
    assert make_plan(f"learned:path={filters / 'pw'}+eotp").policy.eot is not None  # the shipped one, as documented


def test_evaluate_loads_each_filter_once(model, filters, monkeypatch):
    import learn2pd.decoding.policies.learned as learned
    from learn2pd.evaluation.runner import evaluate
    from learn2pd.models.tokenizer import build_char_tokenizer
    from learn2pd.tasks.suite import heldout_problems

    calls = []
    real = learned.load_filter
    monkeypatch.setattr(learned, "load_filter", lambda path: calls.append(path) or real(path))
    tok = build_char_tokenizer()
    spec = ModelSpec("llada", tok.mask_token_id, tok.eos_token_id, tok.eos_token_id, (tok.eos_token_id,))
    cfg_model = LLaDAConfig(d_model=16, n_heads=2, n_layers=1, mlp_hidden_size=32, vocab_size=len(tok),
                            embedding_size=len(tok), mask_token_id=tok.mask_token_id, eos_token_id=tok.eos_token_id,
                            pad_token_id=tok.eos_token_id, eot_token_id=None)
    evaluate(LLaDAModelLM(cfg_model).eval(), tok, spec, heldout_problems(n=3),
             [f"learned:path={filters / 'pw'}", "vanilla"], DecodeConfig(gen_length=16, block_length=8), progress=False)
    assert calls == [filters / "pw"]
