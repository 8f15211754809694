"""The tiny-model pretrainer: batches, the masked-diffusion loss with padding weight, and staged runs."""

import collections

import pytest
import torch
import torch.nn.functional as F
import yaml

from learn2pd.models.tokenizer import build_char_tokenizer
from learn2pd.trainers.pretrain_tiny import MaskedDiffusionModule, TaskBatches, main, stage_seed

TOK = build_char_tokenizer()
MODEL = dict(d_model=32, n_heads=2, n_layers=2, mlp_hidden_size=64, max_sequence_length=128, rope_theta=1e4,
             init_std=0.05)


def test_batches_keep_prompts_and_pad_answers_with_eos():
    ids, attn, prompt_len = next(iter(TaskBatches(TOK, {40: 1.0}, 6, ["arith", "sort", "rev"], seed=0)))
    assert ids.shape == (6, prompt_len + 40) and attn[:, prompt_len:].all()
    for row, mask in zip(ids, attn):
        prompt = TOK.decode(row[:prompt_len][mask[:prompt_len].bool()], skip_special_tokens=True)
        answer = TOK.decode(row[prompt_len:], skip_special_tokens=True)
        assert prompt.split()[0] in ("arith", "sort", "rev") and answer.strip()
        assert row[-1] == TOK.eos_token_id  # answers end in EOS padding


def test_family_weights_are_followed():
    batches = iter(TaskBatches(TOK, {40: 1.0}, 100, {"arith": 0.5, "sort": 0.25, "rev": 0.25}, seed=1))
    counts = collections.Counter()
    for _ in range(4):
        ids, attn, p = next(batches)
        counts.update(TOK.decode(r[:p][a[:p].bool()], skip_special_tokens=True).split()[0] for r, a in zip(ids, attn))
    assert 160 <= counts["arith"] <= 240 and counts["sort"] > 60 and counts["rev"] > 60


def _rows(batch):
    ids, attn, p = batch
    return [(TOK.decode(r[:p][a[:p].bool()], skip_special_tokens=True), r[p:]) for r, a in zip(ids, attn)]


def test_a_mixs_sizes_override_the_stages_for_its_batches():
    mixes = [{"weight": 0.5, "families": {"chain": 1.0}, "gen_lengths": {128: 1.0}, "sizes": {"chain": [8, 9]}},
             {"weight": 0.5, "families": {"chain": 1.0}, "gen_lengths": {224: 1.0}}]
    batches = iter(TaskBatches(TOK, None, 8, None, seed=0, sizes={"chain": [14, 16]}, mixes=mixes))
    seen = collections.Counter()
    for _ in range(12):
        batch = next(batches)
        lines = {ord(prompt.split()[1]) - ord("a") + 1 for prompt, _ in _rows(batch)}  # `chain p ...`: 16
        short = batch[0].shape[1] - batch[2] == 128
        assert lines <= ({8, 9} if short else {14, 15, 16}), lines
        seen[short] += 1
    assert seen[True] >= 2 and seen[False] >= 2


def test_mixes_keep_long_and_short_answers_in_separate_batches_and_the_region_fits_the_answer():
    mixes = [{"weight": 0.5, "families": {"chain": 0.5, "table": 0.5}, "gen_lengths": {64: 1.0}},
             {"weight": 0.5, "families": ["arith", "sort"], "gen_lengths": {40: 1.0}}]
    batches = iter(TaskBatches(TOK, None, 8, None, seed=0, mixes=mixes))
    kinds = collections.Counter()
    for _ in range(10):
        batch = next(batches)
        families = {prompt.split()[0] for prompt, _ in _rows(batch)}
        long = families <= {"chain", "table"}
        assert long or families <= {"arith", "sort"}
        kinds[long] += 1
        gen = batch[0].shape[1] - batch[2]
        # a 64-token region is raised to fit every long answer and its EOS (a multiple of 32); 40 stays 40
        assert gen % 32 == 0 and gen > 64 if long else gen == 40
        for _, answer in _rows(batch):
            assert (answer == TOK.eos_token_id).any()  # no answer is cut off
    assert kinds[True] >= 2 and kinds[False] >= 2


def test_fewshot_batches_put_solved_problems_of_the_family_before_the_question():
    import itertools

    from learn2pd.tasks.suite import heldout_problems, train_problems

    fewshot = {"share": 1.0, "max_k": 3, "max_prompt": 600, "batch_size": 5}
    batches = list(itertools.islice(TaskBatches(TOK, {40: 1.0}, 8, ["chain", "sort"], seed=0, fewshot=fewshot), 4))
    assert all(b[0].shape[0] == 5 and b[2] <= 600 for b in batches)
    solved = {f: {f"{s.prompt}\n{s.answer}\n" for s in itertools.islice(train_problems((f,), 7), 100)}
              for f in ("chain", "sort")}
    held = {q.prompt for q in heldout_problems(("chain", "sort"), 2000)}
    per_row = []
    for prompt, _ in (row for batch in batches for row in _rows(batch)):
        # `question\nanswer\n` per shot (the text `--num-fewshot` writes), then the question and "\n"
        question = prompt[:-1].rsplit("\n", 1)[-1]
        family, rest = question.split()[0], prompt[: -len(question) - 1]
        per_row.append(0)
        while rest:
            shot = next(s for s in solved[family] if rest.startswith(s))  # a solved training problem
            assert shot.split("\n")[0] not in held
            rest, per_row[-1] = rest[len(shot):], per_row[-1] + 1
    # 1-3 shots a row; a chain row's third shot (about 240 tokens each) is dropped to fit 600
    assert min(per_row) >= 1 and max(per_row) <= 3 and len(set(per_row)) > 1


def test_padding_weight_counts_answer_and_first_eos_fully_and_padding_at_its_weight():
    torch.manual_seed(0)
    cfg = dict(MODEL, vocab_size=len(TOK), embedding_size=len(TOK), mask_token_id=0, eos_token_id=1, pad_token_id=1)
    module = MaskedDiffusionModule(cfg, 1e-3, 1, 10, mask_id=0, loss_weighting="none", pad_weight=0.25, eos_id=1)
    ids = torch.tensor([[2, 40, 41, 4, 20, 21, 1, 1, 1, 1]])
    gen = torch.arange(10)[None] >= 4
    masked = torch.tensor([[0, 0, 0, 0, 1, 0, 1, 1, 0, 1]], dtype=torch.bool)
    loss = module.masked_loss(ids, torch.ones_like(ids), gen, masked, torch.tensor([0.5]))
    ce = F.cross_entropy(module.model(torch.where(masked, 0, ids)).logits[0], ids[0], reduction="none")
    # position 4 (answer) and 6 (first EOS) weigh 1, positions 7 and 9 (padding) 0.25
    want = (ce[4] + ce[6] + 0.25 * (ce[7] + ce[9])) / 2.5
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)


def test_stages_run_in_order_and_export_a_loadable_model(tmp_path, monkeypatch):
    from learn2pd.models.loading import load_model

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = {"seed": 0, "out": str(tmp_path / "tiny"), "batch_size": 4, "warmup_steps": 1, "lr": 1e-3, "log_every": 1,
           "loss_weighting": "none", "log_dir": str(tmp_path / "logs"), "export_every": 1000, "model": MODEL,
           "stages": [{"max_steps": 2, "gen_lengths": {40: 1.0}},
                      {"max_steps": 1, "gen_lengths": {40: 1.0}, "pad_weight": 0.25,
                       "families": {"arith": 1.0}}]}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    main(["--config", str(path)])
    model, tok, spec = load_model(tmp_path / "tiny")
    assert spec.mask_id == tok.mask_token_id == 0 and model.config.d_model == 32
    assert len(list((tmp_path / "logs").rglob("hparams.yaml"))) == 2  # one logged run per stage
    runs = list((tmp_path / "logs").rglob("offline-run-*/*.wandb"))  # and one offline W&B run per stage
    assert len(runs) == 2 and all(b"train/loss" in r.read_bytes() for r in runs)
    # --until-stage 1 stops after the first stage: one run, its weights exported
    path.write_text(yaml.safe_dump({**cfg, "wandb": False}))
    main(["--config", str(path), "--until-stage", "1", "--out", str(tmp_path / "first")])
    assert len(list((tmp_path / "logs").rglob("hparams.yaml"))) == 3
    first = load_model(tmp_path / "first")[0].state_dict()
    assert any(not torch.equal(first[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("spread", [4, 32])
def test_cut_rows_end_within_the_spread_after_the_answer_and_other_batches_are_unchanged(spread):
    plain = next(iter(TaskBatches(TOK, {80: 1.0}, 64, ["arith", "sort", "rev"], seed=0)))
    cut = next(iter(TaskBatches(TOK, {80: 1.0}, 64, ["arith", "sort", "rev"], seed=0, cut_fraction=1.0,
                                cut_spread=spread)))
    assert torch.equal(plain[0], cut[0])  # same problems and tokens; only the attention mask differs
    p = plain[2]
    past = []
    for row, live in zip(cut[0], cut[1]):
        answer_end = (row[p:] == TOK.eos_token_id).int().argmax().item()  # first EOS
        kept = int(live[p:].sum())
        assert answer_end + 1 <= kept <= answer_end + spread and live[p:p + kept].all()
        past.append(kept - answer_end)
    assert max(past) > spread // 2  # the whole spread is drawn, not only its start


def test_suffix_mask_covers_everything_from_a_cut_inside_the_answer():
    from learn2pd.trainers.pretrain_tiny import suffix_mask

    # prompt of 3, answer "20 21 22" then EOS padding (row 0); row 1 fills the region with no EOS
    ids = torch.tensor([[2, 40, 4, 20, 21, 22, 1, 1], [2, 40, 4, 20, 21, 22, 23, 24]])
    gen = torch.arange(8)[None].expand(2, 8) >= 3
    mask = suffix_mask(ids, gen, 3, eos_id=1, u=torch.tensor([0.0, 0.0]))
    assert mask.tolist() == [[False] * 3 + [True] * 5] * 2  # u=0: the whole answer
    mask = suffix_mask(ids, gen, 3, eos_id=1, u=torch.tensor([0.999, 0.999]))
    # the last cut is the first EOS (row 0: position 6) or the last position (row 1: no EOS)
    assert mask[0].nonzero().flatten().tolist() == [6, 7] and mask[1].nonzero().flatten().tolist() == [7]
    cuts = {int(suffix_mask(ids, gen, 3, 1, torch.tensor([u, u]))[0].int().argmax()) for u in torch.arange(0, 1, 0.05)}
    assert cuts == {3, 4, 5, 6}  # every cut from the answer's first position to its first EOS


def test_suffix_cut_after_a_token_falls_right_after_one_of_its_occurrences():
    from learn2pd.trainers.pretrain_tiny import suffix_mask

    # prompt of 2; answer "5 = 7 8 = 9" then EOS; row 1 has no '=' (id 29) and keeps the uniform cut
    ids = torch.tensor([[2, 4, 5, 29, 7, 8, 29, 9, 1], [2, 4, 5, 6, 7, 8, 9, 10, 1]])
    gen = torch.arange(9)[None].expand(2, 9) >= 2
    first = lambda u: suffix_mask(ids, gen, 2, 1, torch.tensor([u, u]), cut_after=29).int().argmax(1).tolist()  # noqa: E731
    assert first(0.0) == [4, 2] and first(0.49) == [4, 5] and first(0.5) == [7, 5] and first(0.99) == [7, 8]


def test_block_state_mask_is_clean_before_the_block_noisy_in_it_and_masked_after():
    from learn2pd.trainers.pretrain_tiny import block_state_mask

    # prompt of 2, generation region of 10 in blocks of 4: [2, 6), [6, 10), [10, 12)
    gen = (torch.arange(12)[None] >= 2).expand(3, 12)
    noise = torch.zeros(3, 12, dtype=torch.bool)
    noise[:, ::2] = True  # even positions drawn as noise
    mask = block_state_mask(gen, 2, 4, noise, u=torch.tensor([0.0, 0.5, 0.99]))
    assert mask[0].nonzero().flatten().tolist() == [2, 4, 6, 7, 8, 9, 10, 11]  # block 0 noisy, rest masked
    assert mask[1].nonzero().flatten().tolist() == [6, 8, 10, 11]  # block 1: block 0 clean
    assert mask[2].nonzero().flatten().tolist() == [10]  # last block (short): only its noise
    assert not mask[:, :2].any()  # the prompt is never masked


def test_end_block_rows_are_in_the_block_holding_the_answers_first_eos():
    from learn2pd.trainers.pretrain_tiny import block_state_mask, end_block_u

    # prompt of 2, region of 10 in blocks of 4; first EOS (1) at region positions 1, 5 and 9
    ids = torch.full((3, 12), 7)
    for row, end in enumerate([1, 5, 9]):
        ids[row, 2 + end:] = 1
    gen = (torch.arange(12)[None] >= 2).expand(3, 12)
    u = end_block_u(ids, gen, 2, 1, 4)
    mask = block_state_mask(gen, 2, 4, torch.zeros(3, 12, dtype=torch.bool), u)
    # no noise drawn: the end block is clean, every later position masked
    assert mask[0].nonzero().flatten().tolist() == [6, 7, 8, 9, 10, 11]
    assert mask[1].nonzero().flatten().tolist() == [10, 11]
    assert not mask[2].any()  # the end in the last block


def test_confidence_ordered_rows_keep_the_least_confident_answer_tokens_masked():
    torch.manual_seed(0)
    cfg = dict(MODEL, vocab_size=len(TOK), embedding_size=len(TOK), mask_token_id=0, eos_token_id=1, pad_token_id=1)
    module = MaskedDiffusionModule(cfg, 1e-3, 1, 10, mask_id=0, loss_weighting="none", eos_id=1)
    ids = torch.tensor([[5, 6, 7, 20, 21, 22, 23, 1, 1, 1]] * 3)
    gen = torch.arange(10)[None].expand_as(ids) >= 3
    conf = torch.full((3, 10), 0.5)
    conf[:, 3:7] = torch.tensor([0.9, 0.2, 0.7, 0.4])  # answer tokens by confidence: 3, 5, 6, 4
    fake = torch.zeros(3, 10, len(TOK))
    fake[..., 2] = conf.logit()  # softmax over {token 2, the rest at logit 0} tracks conf's order

    class Fixed(torch.nn.Module):
        def forward(self, x, attention_mask=None):
            return type("Out", (), {"logits": fake})()

    module.model = Fixed()
    mask = module.confidence_ordered_mask(ids, torch.ones_like(ids), gen, u=torch.tensor([0.0, 0.45, 0.99]))
    assert mask[0].nonzero().flatten().tolist() == [3, 4, 5, 6]  # nothing committed yet
    assert mask[1].nonzero().flatten().tolist() == [4, 6]  # the two most confident (3, 5) committed
    assert not mask[2].any()  # all committed


def test_ordered_rows_replace_the_random_mask_inside_the_answer_only():
    torch.manual_seed(0)
    cfg = dict(MODEL, vocab_size=len(TOK), embedding_size=len(TOK), mask_token_id=0, eos_token_id=1, pad_token_id=1)
    module = MaskedDiffusionModule(cfg, 1e-3, 1, 10, mask_id=0, loss_weighting="none", eos_id=1, ordered_fraction=1.0)
    ids = torch.tensor([[5, 6, 7, 20, 21, 22, 23, 1, 1, 1]]).repeat(64, 1)
    seen = []
    module.masked_loss = lambda ids, attn, gen, masked, t: seen.append(masked) or torch.zeros(())
    module.log = lambda *a, **k: None
    module.training_step((ids[None], torch.ones_like(ids)[None], torch.tensor(3)), 0)
    masked = seen[0]
    assert not masked[:, :3].any() and not masked[:, 7:].any()  # prompt, first EOS and padding visible
    assert set(masked.sum(1).tolist()) == {0, 1, 2, 3, 4}  # 0 to all 4 answer tokens still masked


@pytest.mark.parametrize("kind", ["suffix_fraction", "block_fraction"])
def test_a_row_kind_with_the_whole_share_shapes_every_row(kind):
    torch.manual_seed(0)
    cfg = dict(MODEL, vocab_size=len(TOK), embedding_size=len(TOK), mask_token_id=0, eos_token_id=1, pad_token_id=1)
    module = MaskedDiffusionModule(cfg, 1e-3, 1, 10, mask_id=0, loss_weighting="none", eos_id=1, block_length=4,
                                   **{kind: 1.0})
    ids = torch.tensor([[5, 6, 20, 21, 22, 23, 24, 1, 1, 1, 1, 1]]).repeat(64, 1)
    seen = []
    module.masked_loss = lambda ids, attn, gen, masked, t: seen.append(masked) or torch.zeros(())
    module.log = lambda *a, **k: None
    module.training_step((ids[None], torch.ones_like(ids)[None], torch.tensor(2)), 0)
    masked = seen[0]
    assert not masked[:, :2].any() and masked.any(1).sum() >= 48  # prompt clean; most rows masked
    for row in masked[masked.any(1)]:
        first = int(row.int().argmax())
        if kind == "suffix_fraction":  # a clean prefix, then everything masked
            assert row[first:].all()
        else:  # blocks of 4 from position 2: every block after the first noisy one fully masked
            next_block = 2 + ((first - 2) // 4 + 1) * 4
            assert row[next_block:].all()


def test_a_stage_keeps_the_data_seed_it_ran_with_when_it_names_one():
    # stages moved from one config to another keep their data; the others draw seed + index
    stages = yaml.safe_load(open("configs/pretrain/tiny.yaml"))["stages"]
    cfg = {"seed": 0}
    assert [stage_seed({**cfg, **st}, i) for i, st in enumerate(stages[:7])] == list(range(7))
    assert stage_seed({**cfg, "data_seed": 12}, 11) == 12 and stage_seed({"seed": 5}, 2) == 7


def test_bf16_falls_back_to_float32_only_on_a_cpu_that_emulates_it(capsys):
    from learn2pd.trainers.pretrain_tiny import stage_precision

    assert stage_precision("bf16-mixed", cuda=False, native_bf16=False) == "32-true"
    assert "no native bf16" in capsys.readouterr().out
    assert stage_precision("bf16-mixed", cuda=False, native_bf16=True) == "bf16-mixed"
    assert stage_precision("bf16-mixed", cuda=True, native_bf16=False) == "bf16-mixed"  # GPUs have it
    assert stage_precision("32-true", cuda=False, native_bf16=False) == "32-true"
    assert capsys.readouterr().out == ""
