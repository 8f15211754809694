"""The `learn2pd` lm-eval model on the shipped tiny dLLM: generation requests (stop sequences, caps, lengths,
chat templates), LLaDA's Monte-Carlo loglikelihood (Dream's shift included) and the decoding cost per task."""

import copy

import pytest
import torch

pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402

from learn2pd.decoding.batching import generate  # noqa: E402
from learn2pd.decoding.config import DecodeConfig  # noqa: E402
from learn2pd.harness import Learn2PDLM  # noqa: E402
from learn2pd.harness.likelihood import mask_counts, mask_rows, mc_loglikelihood  # noqa: E402
from learn2pd.models.spec import ModelSpec  # noqa: E402
from learn2pd.tasks.prompting import format_prompt  # noqa: E402

PLAN = "threshold:tau=0.9+eotp"


def _gen(context, task="t", i=0, **kwargs):
    return Instance("generate_until", {}, (context, kwargs), i, (task, i, 1))


def _ll(context, continuation, task="t", i=0):
    return Instance("loglikelihood", {}, (context, continuation), i, (task, i, 1))


def _lm(tiny, **kw):
    model, tok, spec = tiny
    return Learn2PDLM(model, tokenizer=tok, spec=spec, **({"plan": PLAN, "block_length": 32} | kw))


def test_generate_until_cuts_at_stops_caps_tokens_and_costs_per_task(tiny, one_thread):
    model, tok, spec = tiny
    lm = _lm(tiny, gen_length=64)
    alone = generate(model, tok, ["sort 7 4 5 2 8"], PLAN, DecodeConfig(gen_length=64, block_length=32), spec)
    assert alone.texts == ["2 4 5 7 8"]
    ctx = "sort 7 4 5 2 8\n"  # the plain format: the same ids as format_prompt's
    assert lm.tok_encode(ctx) == format_prompt(tok, "sort 7 4 5 2 8")
    reqs = [_gen(ctx, "a", until=[]), _gen(ctx, "a", until=["7", " 5"]), _gen(ctx, "b", until="8"),
            _gen(ctx, "b", until=[], max_gen_toks=3), _gen("rev abc\n", "b", until=["\n\n"])]
    assert lm.generate_until(reqs, disable_tqdm=True) == ["2 4 5 7 8", "2 4", "2 4 5 7 ", "2 4", "cba"]
    cost = lm.get_model_info()["learn2pd"]["decoding_cost"]
    assert cost["a"]["samples"] == 2 and cost["b"]["samples"] == 3
    assert cost["a"]["answer_tokens"] == 2 * len("2 4 5 7 8")  # before the end token, whatever the stop cut
    assert cost["b"]["tokens_per_forward"] == pytest.approx(3 * 64 / cost["b"]["nfe"])
    assert cost["a"]["tokens_per_s"] == pytest.approx(cost["a"]["answer_tokens"] / cost["a"]["generation_s"])


def test_gen_length_follows_max_gen_toks_without_a_model_argument(tiny, one_thread):
    lm = _lm(tiny)  # no gen_length: max_gen_toks rounded up to whole blocks of 32
    reqs = [_gen("rev abcd\n", "short", until=[], max_gen_toks=10), _gen("rev abcd\n", "long", until=[],
                                                                         max_gen_toks=40)]
    assert lm.generate_until(reqs, disable_tqdm=True) == ["dcba", "dcba"]
    cost = lm.cost.summary()
    assert cost["short"]["generated_positions"] == 32 and cost["long"]["generated_positions"] == 64
    context = tiny[2].context_length  # a region as long as the whole context leaves no room for the prompt
    with pytest.raises(ValueError, match="no room for a prompt"):
        lm.generate_until([_gen("rev abcd\n", until=[], max_gen_toks=context)], disable_tqdm=True)


def test_long_prompts_keep_their_end(tiny):
    lm = _lm(tiny, gen_length=64)
    context = tiny[2].context_length
    ids = lm._prompt_ids("rev " + "ab" * context + "\n", 64)  # longer than the context: cut from the left
    assert len(ids) == context - 64 and ids[-1] == lm.tok_encode("\n")[-1]


def test_chat_template_renders_the_prompt_learn2pd_feeds(tiny):
    model, tok, spec = tiny
    chat_tok = copy.deepcopy(tok)
    chat_tok.chat_template = "{{ bos_token }}{% for m in messages %}[{{ m['content'] | trim }}]{% endfor %}\n"
    lm = Learn2PDLM(model, tokenizer=chat_tok, spec=spec)
    with pytest.raises(ValueError, match="no chat template"):
        _lm(tiny).apply_chat_template([{"role": "user", "content": "rev ab"}])
    from lm_eval.tasks import TaskManager

    from learn2pd.tasks.lm_eval_tasks import LOCAL_TASKS

    task = TaskManager(include_path=str(LOCAL_TASKS), include_defaults=False).load(["learn2pd_rev"])["tasks"][
        "learn2pd_rev"]
    doc = task.eval_docs[0]
    ctx = task.fewshot_context(doc, 0, apply_chat_template=True, chat_template=lm.apply_chat_template)
    assert ctx.startswith("<|bos|>[rev ")
    assert lm.tok_encode(ctx) == format_prompt(chat_tok, doc["question"])  # BOS once, the same turn
    assert lm.tokenizer_name == tok.name_or_path.replace("/", "__")


def test_mask_counts_are_llada_stratified_and_rows_mask_only_the_continuation():
    g = torch.Generator().manual_seed(0)
    assert sorted(mask_counts(7, 7, g).tolist()) == list(range(1, 8))  # b = T: every count once
    counts = mask_counts(4, 10, g)
    assert counts.min() >= 1 and counts.max() <= 10 and len(set(counts.tolist())) == 4
    seq = torch.arange(100, 115)
    ids, masked = mask_rows(seq, 5, counts, 0, g)
    assert masked[:, :5].sum() == 0 and masked.sum(1).tolist() == counts.tolist()
    assert (ids[masked] == 0).all() and torch.equal(ids[~masked], seq.expand(4, -1)[~masked])


class _Positional(torch.nn.Module):
    """Logits whose position i predicts token i (vocab 64): a target of tokens = positions is certain."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, ids):
        logits = torch.full((*ids.shape, 64), -30.0)
        logits[:, torch.arange(ids.shape[1]), torch.arange(ids.shape[1])] = 30.0
        return type("Out", (), {"logits": logits})()


def test_loglikelihood_uses_aligned_or_shifted_logits():
    llada = ModelSpec("llada", mask_id=63, eos_id=62, pad_id=62, end_ids=(62,))
    dream = ModelSpec("dream", mask_id=63, eos_id=62, pad_id=62, end_ids=(62,), logit_shift=True)
    prefix, target = [1, 2, 3], [3, 4, 5]  # target tokens equal their positions
    assert mc_loglikelihood(_Positional(), llada, prefix, target, mc_num=8, batch_size=4) == pytest.approx(0, abs=1e-6)
    # Dream predicts position i from logits[i - 1], which names token i - 1: every masked token costs ~60 nats
    assert mc_loglikelihood(_Positional(), dream, prefix, target, mc_num=8, batch_size=4) < -100


def test_single_token_estimate_is_exact_and_the_right_answer_scores_higher(tiny, one_thread):
    model, tok, spec = tiny
    prompt = format_prompt(tok, "sort 3 1 2")
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([prompt + [spec.mask_id]])).logits[0, -1].float(), -1)
    one = tok("1", add_special_tokens=False).input_ids
    # one continuation token: always fully masked (ratio 1), so every sample gives the exact log-probability
    assert mc_loglikelihood(model, spec, prompt, one, mc_num=5, batch_size=2) == pytest.approx(float(logp[one[0]]),
                                                                                               abs=1e-4)
    lm = _lm(tiny, mc_num=16, batch_size=8)
    (good, good_greedy), (bad, bad_greedy) = lm.loglikelihood(
        [_ll("sort 3 1 2\n1", " 2 3"), _ll("sort 3 1 2\n1", " 3 2")], disable_tqdm=True)
    assert good > -0.5 and bad < good - 5 and good_greedy and not bad_greedy
    assert lm.cost.summary()["t"]["loglikelihood_forwards"] == 2 * (16 // 8 + len(" 2 3"))  # MC, greedy check
    with pytest.raises(NotImplementedError, match="perplexity"):
        lm.loglikelihood_rolling([])


def test_model_args_from_the_command_line(tiny):
    lm = Learn2PDLM.create_from_arg_obj(
        {"plan": "localleap:kappa=0.8", "tau": 0.6, "gen_length": 64, "batch_size": 4, "mc_num": 8},
        {"batch_size": 1, "device": "cuda:0" if not torch.cuda.is_available() else "cpu"})
    assert lm.plan.describe().startswith("localleap:kappa=0.8,tau=0.6")  # the comma-split spec joined back
    assert lm.batch_size == 4 and str(lm._device) == "cpu" and lm.gen_length == 64
    learned = Learn2PDLM.create_from_arg_string("plan=learned+eotp,filter=checkpoints/tiny-llada-filter-positionwise")
    assert "tiny-llada-filter-positionwise" in learned.plan.describe()
    with pytest.raises(ValueError, match="unknown learn2pd model argument 'gen_len'"):
        Learn2PDLM.create_from_arg_obj({"gen_len": 64})
    with pytest.raises(ValueError, match=r"plan .oracle. commits against a reference .*--policies vanilla,oracle"):
        Learn2PDLM.create_from_arg_obj({"plan": "oracle"})
