"""Train the embedded tiny LLaDA on the synthetic task suite with the masked-diffusion objective.

    python -m learn2pd.trainers.pretrain_tiny --config configs/pretrain/tiny.yaml [--max-steps N] [--out DIR]

Objective (LLaDA SFT): draw t ~ U(eps, 1) per sequence, mask each answer position (EOS padding
included) with probability t, and minimise the cross-entropy on masked positions, weighted by 1/t and
normalised by the answer length (`loss_weighting: inverse_t`), or plainly averaged over masked
positions (`none`: same minimiser, lower variance). Prompts are never masked. `pad_weight` < 1
down-weights the EOS padding after the answer's first EOS: on a 128-token generation region padding is
most of the masked positions and is learnt early, so at full weight it dilutes the signal of the answer
tokens that decide exact-match accuracy. The first EOS (where the answer ends) keeps weight 1.

Suffix masking (`suffix_fraction`): in uniformly random masking, when a worked step's result is masked
a later copy of it (the next line starts with it) is almost always visible, so the model learns to copy
from the future and never to compute a line from its own operands. Measured on the shipped model before
this option: with lines 1..k visible and everything from line k's result on masked, line 2's result was
right 42% of the time, no better than with the whole answer masked (43%; benchmarks/arith_probe.py).
A share of rows therefore masks everything from a random cut point inside the answer on and nothing
before it: the state
semi-autoregressive decoding is in, and the only one where a step's own line is its sole witness. (With
random masking kept before the cut, 500 steps at 0.5 moved nothing: a row then gives the local route
about once in 25. With a clean prefix and a uniform cut, 500 steps at 0.75 moved nothing either: the cut
lands on a step's result in ~1 row in 5. `suffix_cut_after: "="` puts every cut of a row that has one
right after an '=', on a worked step's result.)

Block states (`block_fraction`): semi-autoregressive decoding keeps every block after the current one
fully masked, a state uniform random masking almost never draws (96 masked positions in a row at gen 128,
block 32). After stage 5 the model sorted "5 6 4" right at gen 16 and wrote "4 4 6" at gen 128 with the
later blocks masked. A share of rows is drawn in that state: earlier blocks clean, one block at rate t,
the rest masked.

`end_block_fraction` of those rows are at the block holding the answer's end: the state End-of-Text
Prediction cuts in (with the whole block masked, its most confident end token places the cut).

Confidence-ordered rows (`ordered_fraction`): decoding one token at a time commits the end (EOS,
padding) and the separators first, then the digits the model is surest of, so the digits it doubts most
are predicted last, with the rest of the answer visible. After stage 6 the model filled "0 0 5 _ 8" with
5 (sort 7 8 5 0 0) and sorted 76.6% of held-out lists one token at a time against 98.8% in one forward.
With the correct answer visible and one digit masked, that digit was right 94.0% of the time when
chosen at random but 88.0% when it was the least confident one (benchmarks/sort_probe.py, 200
held-out lists), and those are the states decoding visits. Rows masking random answer tokens (end
visible) did not move sort in 400 steps. A share of rows is therefore drawn in that order: one
no-gradient forward with the whole generation region masked ranks the answer's tokens by confidence;
a random number of the most confident ones and everything from the first EOS on are visible, the rest
masked.

Initialisation: LLaDA-8B's `init_std` 0.02 is far too small at width 192: with every projection and
the embedding at 0.02 the residual stream and attention logits start near zero, and in a measured run
the model barely learnt in 1,000 steps. Memorising one fixed batch of 32 (d128, 4 layers): 29% masked-token
accuracy after 120 steps at 0.02, 86% at 0.05 (configs/pretrain/tiny.yaml).
"""

from __future__ import annotations

import itertools
import math
import random
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset

from learn2pd.atomic import atomic_dir, check_output
from learn2pd.configfile import Check, ConfigError, OneLineParser, read_yaml
from learn2pd.errors import run_command
from learn2pd.models.configuration_dream import DreamConfig
from learn2pd.models.configuration_llada import LLaDAConfig
from learn2pd.models.modeling_dream import DreamModel
from learn2pd.models.modeling_llada import LLaDAModelLM
from learn2pd.models.tokenizer import build_char_tokenizer
from learn2pd.tasks.prompting import format_prompt, left_pad
from learn2pd.tasks.suite import SUITE, train_problems
from learn2pd.verbosity import lightning_trainer, quiet_libraries


class TaskBatches(IterableDataset):
    """Endless batches of (ids, attention_mask, prompt_len) with the answer padded to gen_length.

    `mixes` (optional): a list of {weight, families, gen_lengths[, sizes]}; each batch draws one mix, so
    short and long answers can live in separate batches (a long answer in a batch makes the whole batch's
    region long); a mix's `sizes` override the stage's for its families (short chains in short regions
    are cheaper steps). Without it there is one mix, the given `families` and `gen_lengths`. A batch's region always
    fits its longest answer and its first EOS (raised to a multiple of 32 when it does not).

    `fewshot` (optional): {share, max_k, max_prompt, batch_size}: that share of batches puts 1..max_k
    solved training problems of the same family before each question (learn2pd.tasks.fewshot's format),
    dropping shots while a prompt is longer than max_prompt tokens; such batches hold `batch_size` rows.
    """

    def __init__(self, tokenizer, gen_lengths: dict, batch_size: int, families, seed: int, sizes=None,
                 cut_fraction: float = 0.0, mixes: list | None = None, fewshot: dict | None = None,
                 cut_spread: int = 4):
        self.tok, self.batch_size = tokenizer, batch_size
        # gen_lengths {gen_length: weight}: most batches use a short generation region (cheap), the rest the
        # full evaluation length so the model learns to fill long EOS padding.
        # families: a list (taken in turn) or {family: weight} (drawn at random, e.g. more of the hard one)
        self.mixes = mixes or [{"weight": 1.0, "families": families, "gen_lengths": gen_lengths}]
        self.seed, self.sizes, self.fewshot = seed, sizes, fewshot
        # Share of rows whose generation region ends 1..cut_spread positions after the answer (the rest is
        # masked out of attention and loss): what the model sees once EoTP drops the cut positions. EoTP
        # cuts at the block's most confident end, anywhere up to a block past the answer: a narrow spread
        # teaches the model that the region's last position marks the answer's end.
        self.cut_fraction, self.cut_spread = cut_fraction, cut_spread

    def _problems(self, families, rng: random.Random, sizes=None):
        sizes = {**(self.sizes or {}), **(sizes or {})} or None
        if not isinstance(families, dict):
            yield from train_problems(tuple(families), self.seed, sizes)
            return
        streams = {f: train_problems((f,), self.seed, sizes) for f in families}
        names, weights = list(families), list(families.values())
        while True:
            yield next(streams[rng.choices(names, weights)[0]])

    def _with_shots(self, problems, k: int, shot_streams) -> list[list[int]]:
        prompts = []
        for p in problems:
            stream = shot_streams.setdefault(p.family, train_problems((p.family,), self.seed + 7, self.sizes))
            shots = list(itertools.islice(stream, k))
            while True:
                text = "".join(f"{s.prompt}\n{s.answer}\n" for s in shots) + p.prompt
                ids = format_prompt(self.tok, text)
                if not shots or len(ids) <= self.fewshot["max_prompt"]:
                    break
                shots.pop(0)
            prompts.append(ids)
        return prompts

    def __iter__(self):
        rng = random.Random(self.seed)
        mix_rng, shot_rng = random.Random(self.seed + 3), random.Random(self.seed + 4)
        streams = [self._problems(m["families"], random.Random(self.seed + 1 + 10 * i), m.get("sizes"))
                   for i, m in enumerate(self.mixes)]
        shot_streams: dict = {}
        cut_rng = random.Random(self.seed + 2)  # its own stream: cut_fraction 0 leaves the batches unchanged
        eos = self.tok.eos_token_id
        while True:
            weights = [m["weight"] for m in self.mixes]
            i = mix_rng.choices(range(len(self.mixes)), weights)[0] if len(self.mixes) > 1 else 0
            lengths = self.mixes[i]["gen_lengths"]
            gen_length = rng.choices(list(lengths), list(lengths.values()))[0]
            shots = self.fewshot is not None and shot_rng.random() < self.fewshot["share"]
            n = self.fewshot.get("batch_size", self.batch_size) if shots else self.batch_size
            problems = list(itertools.islice(streams[i], n))
            if shots:
                prompts = self._with_shots(problems, shot_rng.randint(1, self.fewshot["max_k"]), shot_streams)
            else:
                prompts = [format_prompt(self.tok, p.prompt) for p in problems]
            ids, mask = left_pad(prompts, eos)
            encoded = [self.tok(p.answer, add_special_tokens=False).input_ids for p in problems]
            need = max(map(len, encoded)) + 1  # the answer and its first EOS
            if need > gen_length:
                gen_length = -(-need // 32) * 32
            answers = torch.full((len(problems), gen_length), eos, dtype=torch.long)
            live = torch.ones_like(answers)
            for j, a in enumerate(encoded):
                answers[j, : len(a)] = torch.tensor(a)
                if self.cut_fraction and cut_rng.random() < self.cut_fraction:
                    live[j, len(a) + 1 + cut_rng.randint(0, self.cut_spread - 1):] = 0
            yield torch.cat([ids, answers], 1), torch.cat([mask, live], 1), ids.shape[1]


class PeriodicExport(L.Callback):
    """Export the model every `every` steps, so a long run always leaves a usable checkpoint."""

    def __init__(self, tokenizer, out: Path, every: int):
        self.tok, self.out, self.every = tokenizer, out, every

    def on_train_batch_end(self, trainer, module, *_):
        if trainer.global_step % self.every == 0:
            export(module, self.tok, self.out)


class MaskedDiffusionModule(L.LightningModule):
    def __init__(self, model_config: dict, lr: float, warmup_steps: int, max_steps: int, mask_id: int,
                 loss_weighting: str = "inverse_t", pad_weight: float = 1.0, eos_id: int = 1,
                 suffix_fraction: float = 0.0, suffix_cut_after: int | None = None,
                 block_fraction: float = 0.0, block_length: int = 32, ordered_fraction: float = 0.0,
                 end_block_fraction: float = 0.0):
        super().__init__()
        self.save_hyperparameters()
        self.model = build_model(model_config)

    def predict(self, noisy, attn):
        """Logits aligned with the tokens: Dream-style models predict position i from i - 1."""
        logits = self.model(noisy, attention_mask=attn).logits
        if getattr(getattr(self.model, "config", None), "model_type", "") == "Dream":
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        return logits

    def training_step(self, batch, _):
        ids, attn, prompt_len = batch
        ids, attn, prompt_len = ids[0], attn[0], int(prompt_len)
        B, T = ids.shape
        # Stratified t over the batch: lower-variance estimate of the same objective.
        t = (torch.rand(1, device=ids.device) + torch.arange(B, device=ids.device) / B) % 1.0
        t = 1e-3 + (1 - 1e-3) * t
        gen = torch.zeros_like(ids, dtype=torch.bool)
        gen[:, prompt_len:] = True
        gen &= attn.bool()  # positions cut from a row (cut_fraction) are neither seen nor predicted
        masked = gen & (torch.rand(B, T, device=ids.device) < t[:, None])
        hp = self.hparams
        # Which noise each row gets: 0 suffix, 1 block state, 2 confidence-ordered, 3 the random mask.
        shares = torch.tensor([hp.suffix_fraction, hp.block_fraction, hp.ordered_fraction]).cumsum(0)
        kind = torch.bucketize(torch.rand(B, device=ids.device), shares.to(ids.device), right=True)
        if hp.suffix_fraction:
            # a clean prefix and a fully masked suffix
            cut = torch.rand(B, device=ids.device)
            suffix = suffix_mask(ids, gen, prompt_len, hp.eos_id, cut, hp.suffix_cut_after)
            masked = torch.where((kind == 0)[:, None], suffix, masked)
        if hp.block_fraction:
            # a semi-autoregressive state: earlier blocks clean, one block masked at rate t, later ones masked
            u = torch.rand(B, device=ids.device)
            if hp.end_block_fraction:  # End-of-Text Prediction decides the end in the block holding it
                u = torch.where(torch.rand(B, device=ids.device) < hp.end_block_fraction,
                                end_block_u(ids, gen, prompt_len, hp.eos_id, hp.block_length), u)
            state = block_state_mask(gen, prompt_len, hp.block_length, masked, u)
            masked = torch.where((kind == 1)[:, None], state, masked)
        if hp.ordered_fraction:
            # where one-token-at-a-time decoding goes: the answer tokens the model is most sure of (fully
            # masked) already committed, the least sure still masked
            rows = (kind == 2).nonzero().squeeze(1)
            if len(rows):
                masked[rows] = self.confidence_ordered_mask(ids[rows], attn[rows], gen[rows],
                                                            torch.rand(len(rows), device=ids.device))
        loss = self.masked_loss(ids, attn, gen, masked, t)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    @torch.no_grad()
    def confidence_ordered_mask(self, ids, attn, gen, u: torch.Tensor) -> torch.Tensor:
        """Per row, the answer's least confident tokens (the model's top-1 probability with the whole
        generation region masked) stay masked; the most confident ones, a share drawn from `u`, and
        everything from the first EOS on are visible."""
        noisy = torch.where(gen, torch.full_like(ids, self.hparams.mask_id), ids)
        conf = self.predict(noisy, attn).float().softmax(-1).amax(-1)
        span = answer_span(ids, gen, self.hparams.eos_id)
        rank = conf.masked_fill(~span, -1.0).argsort(1, descending=True).argsort(1)  # 0 = most confident
        shown = (u * (span.sum(1) + 1)).long()  # 0 .. answer length tokens committed
        return span & (rank >= shown[:, None])

    def masked_loss(self, ids, attn, gen, masked, t):
        """The loss of one draw: `masked` positions replaced by the mask token, predicted from the rest."""
        noisy = torch.where(masked, torch.full_like(ids, self.hparams.mask_id), ids)
        logits = self.predict(noisy, attn)
        ce = F.cross_entropy(logits.float().transpose(1, 2), ids, reduction="none")
        eos = gen & (ids == self.hparams.eos_id)
        padding = eos & (eos.int().cumsum(1) > 1)  # every EOS after the first one
        weight = masked * torch.where(padding, self.hparams.pad_weight, 1.0)
        if self.hparams.loss_weighting == "inverse_t":  # LLaDA's ELBO weighting: unbiased, high variance
            loss = ((ce * weight) / t[:, None]).sum() / gen.sum()
        else:  # plain masked cross-entropy: same minimiser, far lower gradient variance on a small budget
            loss = (ce * weight).sum() / weight.sum().clamp_min(1e-6)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.01, betas=(0.9, 0.98))
        warm, total = self.hparams.warmup_steps, self.hparams.max_steps

        def schedule(step):
            if step < warm:
                return (step + 1) / warm
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

        return [opt], [{"scheduler": torch.optim.lr_scheduler.LambdaLR(opt, schedule), "interval": "step"}]


def suffix_mask(ids, gen, prompt_len: int, eos_id: int, u: torch.Tensor, cut_after: int | None = None):
    """Per row, every generation position from a cut point on; the cut is drawn uniformly (from `u` in
    [0, 1)) between the answer's first position and its first EOS, both included. With `cut_after` (a
    token id), rows holding that token cut right after one of its occurrences, drawn uniformly."""
    T = ids.shape[1]
    eos = gen & (ids == eos_id)
    end = torch.where(eos.any(1), eos.int().argmax(1), torch.full_like(u, T - 1, dtype=torch.long))
    cut = prompt_len + (u * (end - prompt_len + 1)).long()
    if cut_after is not None:
        after = torch.zeros_like(gen)
        after[:, 1:] = gen[:, 1:] & gen[:, :-1] & (ids[:, :-1] == cut_after)
        count = after.sum(1)
        pick = (u * count).long() + 1  # the pick-th allowed position
        chosen = (after & (after.cumsum(1) == pick[:, None])).int().argmax(1)
        cut = torch.where(count > 0, chosen, cut)
    return gen & (torch.arange(T, device=ids.device)[None] >= cut[:, None])


def answer_span(ids, gen, eos_id: int) -> torch.Tensor:
    """Per row, the generation positions before the first EOS (the answer's own tokens)."""
    eos = gen & (ids == eos_id)
    return gen & (eos.int().cumsum(1) == 0)


def end_block_u(ids, gen, prompt_len: int, eos_id: int, block_length: int) -> torch.Tensor:
    """Per row, the `u` for which `block_state_mask` draws the block holding the answer's first EOS."""
    n_blocks = math.ceil((ids.shape[1] - prompt_len) / block_length)
    end = answer_span(ids, gen, eos_id).sum(1)  # the first EOS, counted from the region's start
    return ((end // block_length).clamp(max=n_blocks - 1) + 0.5) / n_blocks


def block_state_mask(gen, prompt_len: int, block_length: int, noise, u: torch.Tensor) -> torch.Tensor:
    """Per row, the state semi-autoregressive decoding is in at some block k (drawn uniformly from `u`):
    generation blocks before k clean, block k masked where `noise` is, every later position masked."""
    T = gen.shape[1]
    n_blocks = math.ceil((T - prompt_len) / block_length)
    start = prompt_len + (u * n_blocks).long() * block_length
    pos = torch.arange(T, device=gen.device)[None]
    current = (pos >= start[:, None]) & (pos < start[:, None] + block_length)
    return gen & ((current & noise) | (pos >= start[:, None] + block_length))


def build_model(model_config: dict):
    """The tiny model of a config: LLaDA (default) or, with `family: dream`, the Dream architecture of
    the same sizes (LLaDA's names mapped to Dream's)."""
    cfg = dict(model_config)
    if cfg.pop("family", "llada") != "dream":
        return LLaDAModelLM(LLaDAConfig(**cfg))
    return DreamModel(DreamConfig(
        vocab_size=cfg["vocab_size"], hidden_size=cfg["d_model"], intermediate_size=cfg["mlp_hidden_size"],
        num_hidden_layers=cfg["n_layers"], num_attention_heads=cfg["n_heads"],
        num_key_value_heads=cfg.get("n_kv_heads") or cfg["n_heads"], max_position_embeddings=cfg["max_sequence_length"],
        rope_theta=cfg["rope_theta"], initializer_range=cfg["init_std"], mask_token_id=cfg["mask_token_id"],
        eos_token_id=cfg["eos_token_id"], pad_token_id=cfg["pad_token_id"], bos_token_id=None))


# LLaDA parameter names -> Dream's (the same computation but for Dream's q/k/v biases, zero at start).
LLADA_TO_DREAM = {"attn_norm": "input_layernorm", "ff_norm": "post_attention_layernorm", "q_proj": "self_attn.q_proj",
                  "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj", "attn_out": "self_attn.o_proj",
                  "ff_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj", "ff_out": "mlp.down_proj"}


def dream_from_llada(dream, llada) -> None:
    """Copy a LLaDA model's weights into a Dream model of the same sizes (its start for the shift)."""
    src = llada.state_dict()
    out = {"model.embed_tokens.weight": src["model.transformer.wte.weight"],
           "model.norm.weight": src["model.transformer.ln_f.weight"],
           "lm_head.weight": src["model.transformer.ff_out.weight"]}
    for key, value in src.items():
        parts = key.split(".")
        if parts[2] == "blocks":
            out[f"model.layers.{parts[3]}.{LLADA_TO_DREAM[parts[4]]}.{parts[5]}"] = value
    missing = dream.load_state_dict(out, strict=False).missing_keys
    assert all(k.endswith("bias") for k in missing), missing


MODEL_FILES = ("*.json", "*.safetensors", "*.jinja", "*.txt", "*.model")  # what export() writes


def export(module: MaskedDiffusionModule, tokenizer, out: Path) -> None:
    """Write model + tokenizer to `out`, replacing it atomically."""
    with atomic_dir(out) as tmp:
        module.model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)


def stage_seed(cfg: dict, stage: int) -> int:
    """A stage's data seed: `seed` + its index, unless it names its own (`data_seed`: the seed it ran
    with, kept when stages move between configs)."""
    return cfg.get("data_seed", cfg["seed"] + stage)


def stage_precision(requested: str, cuda: bool | None = None, native_bf16: bool | None = None) -> str:
    """The precision a stage trains in: the config's, except bf16 on a CPU that only emulates it (no AVX-512
    BF16 or AMX): float32 there, said once per stage. On an AVX2 machine a tiny-choice.yaml step took about 30 s
    in bf16 autocast and about 2.5 s in float32 (step counts read off the running trainer)."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if cuda or not requested.startswith("bf16"):
        return requested
    if native_bf16 is None:  # the check `--dtype auto` makes
        from learn2pd.models.loading import resolve_dtype

        native_bf16 = resolve_dtype("auto", "cpu") == torch.bfloat16
    if native_bf16:
        return requested
    print(f"precision {requested} -> 32-true: this CPU has no native bf16 (AVX-512 BF16 or AMX), where bf16 "
          "autocast runs about 12x slower than float32")
    return "32-true"


def run_stage(cfg: dict, tok, out: Path, init, stage: int) -> MaskedDiffusionModule:
    """One stage: a fresh optimizer and LR schedule, weights from the previous stage, its own data seed."""
    model_cfg = dict(cfg["model"], vocab_size=len(tok), embedding_size=len(tok), mask_token_id=tok.mask_token_id,
                     eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id, eot_token_id=None)
    cut_after = tok.convert_tokens_to_ids(cfg["suffix_cut_after"]) if cfg.get("suffix_cut_after") else None
    # `schedule_steps` > `max_steps` stops a stage part-way down its cosine schedule.
    schedule = cfg.get("schedule_steps", cfg["max_steps"])
    module = MaskedDiffusionModule(model_cfg, cfg["lr"], cfg["warmup_steps"], schedule, tok.mask_token_id,
                                   cfg.get("loss_weighting", "inverse_t"), cfg.get("pad_weight", 1.0),
                                   tok.eos_token_id, cfg.get("suffix_fraction", 0.0), cut_after,
                                   cfg.get("block_fraction", 0.0), cfg.get("block_length", 32),
                                   cfg.get("ordered_fraction", 0.0), cfg.get("end_block_fraction", 0.0))
    if init is not None and type(init.model) is not type(module.model):
        dream_from_llada(module.model, init.model)  # a Dream stage started from LLaDA weights
    elif init is not None:
        module.model.load_state_dict(init.model.state_dict())
    batches = TaskBatches(tok, cfg.get("gen_lengths"), cfg["batch_size"], cfg.get("families", SUITE),
                          stage_seed(cfg, stage), cfg.get("sizes"), cfg.get("cut_fraction", 0.0), cfg.get("mixes"),
                          cfg.get("fewshot"), cfg.get("cut_spread", 4))
    log_dir = cfg.get("log_dir", "runs/pretrain")
    loggers = [L.pytorch.loggers.CSVLogger(log_dir)]
    if cfg.get("wandb", True):  # losses to W&B too, offline unless logged in (learn2pd.tracking)
        from learn2pd import tracking

        loggers.append(tracking.lightning_logger(log_dir, f"pretrain-{out.name}-stage{stage}",
                                                 cfg.get("wandb_project", tracking.DEFAULT_PROJECT),
                                                 config={k: v for k, v in cfg.items() if k != "stages"}))
    trainer = lightning_trainer(max_steps=cfg["max_steps"], accelerator="auto", devices=1, logger=loggers,
                                enable_checkpointing=False, gradient_clip_val=1.0,
                                precision=stage_precision(cfg.get("precision", "32-true")),
                                log_every_n_steps=cfg.get("log_every", 20),
                                callbacks=[PeriodicExport(tok, out, cfg.get("export_every", 250))])
    start = time.time()
    trainer.fit(module, DataLoader(batches, batch_size=1))
    if len(loggers) > 1:
        tracking.finish()  # one W&B run per stage
    print(f"stage {stage}: trained {cfg['max_steps']} steps in {time.time() - start:.0f}s")
    return module


_N, _N0, _F = Check(int, gt=0), Check(int, ge=0), Check(float, ge=0, le=1)
# Every key a config (or one of its stages) may set, with its type and range.
PRETRAIN_KEYS = {
    "out": Check(str), "seed": Check(int), "data_seed": Check(int), "model": Check(dict), "stages": Check(list),
    "init_from": Check(str), "log_dir": Check(str), "lr": Check(float, gt=0), "warmup_steps": _N0,
    "max_steps": _N, "schedule_steps": _N, "batch_size": _N, "block_length": _N, "export_every": _N,
    "precision": Check(str), "loss_weighting": Check(str), "pad_weight": Check(float, ge=0),
    "suffix_fraction": _F, "suffix_cut_after": Check(str), "block_fraction": _F, "ordered_fraction": _F,
    "end_block_fraction": _F, "cut_fraction": _F, "cut_spread": _N, "families": Check(object),
    "gen_lengths": Check(dict), "sizes": Check(dict), "mixes": Check(list), "fewshot": Check(dict),
    "log_every": _N, "wandb": Check(bool), "wandb_project": Check(str),
}


def check_pretrain_config(cfg: dict, where: str) -> None:
    """Refuse an unknown key or a wrong type or range at the top level and in each stage (in place). A
    top-level key that only holds a YAML anchor (`wide: &wide {...}`) is not a setting."""
    import re

    anchors = set(re.findall(r"^(\w+):\s*&", Path(where).read_text(encoding="utf-8"), re.M))
    for i, part in enumerate([cfg, *(cfg.get("stages") or [])]):
        at = where if i == 0 else f"{where}: stages[{i - 1}]"
        if not isinstance(part, dict):
            raise ConfigError(f"{at} must be a mapping of keys, got {part!r}")
        unknown = sorted(set(part) - set(PRETRAIN_KEYS) - (anchors if i == 0 else set()))
        if unknown:
            raise ConfigError(f"{at}: unknown keys {unknown}; known: {', '.join(PRETRAIN_KEYS)}")
        for key, value in part.items():
            if value is not None and key in PRETRAIN_KEYS:
                part[key] = PRETRAIN_KEYS[key](value, f"{at}: {key}")
    for i, stage in enumerate(cfg.get("stages") or [{}]):  # what each stage runs with: its keys over the top's
        missing = [k for k in ("out", "seed", "model", "lr", "warmup_steps", "max_steps", "batch_size")
                   if k not in {**cfg, **stage}]
        if missing:
            raise ConfigError(f"{where}: stage {i} has no {', '.join(missing)}: see configs/pretrain/tiny.yaml")


def main(argv=None) -> int:
    return run_command("pretrain_tiny", lambda: pretrain(argv))


def pretrain(argv=None) -> int:
    ap = OneLineParser(description=__doc__.splitlines()[1])
    ap.add_argument("--config", default="configs/pretrain/tiny.yaml")
    ap.add_argument("--out")
    ap.add_argument("--overwrite", action="store_true", help="replace an --out that is not a model, or write "
                    "inside checkpoints/")
    ap.add_argument("--threads", type=_N.flag("positive int"), help="torch threads (default: torch's)")
    ap.add_argument("--init-from", help="start from an exported checkpoint folder (continue training)")
    ap.add_argument("--from-stage", type=_N0.flag("int >= 0"), default=0,
                    help="skip the stages before this one (with --init-from)")
    ap.add_argument("--until-stage", type=_N0.flag("int >= 0"), default=None,
                    help="stop before this stage (export what came before)")
    ap.add_argument("--verbose", action="store_true", help="let the libraries speak (Lightning, W&B)")
    args = ap.parse_args(argv)
    quiet_libraries(args.verbose)
    cfg = read_yaml(args.config, "configs/pretrain/tiny.yaml")
    check_pretrain_config(cfg, args.config)
    out = check_output(args.out or cfg["out"], "out", folder=True, overwrite=args.overwrite, owns=MODEL_FILES,
                       what="an exported model")
    if args.threads:
        torch.set_num_threads(args.threads)
    L.seed_everything(cfg["seed"])
    tok = build_char_tokenizer()
    # `stages`: a list of overrides of the top-level keys, run in order, each from the previous weights.
    stages = [{**cfg, **st} for st in cfg.get("stages", [{}])]
    module = None
    args.init_from = args.init_from or cfg.get("init_from")  # a config may start from another checkpoint
    if args.init_from:  # only `.model` of a previous stage is read
        from learn2pd.models.loading import load_model

        module = SimpleNamespace(model=load_model(args.init_from)[0])
        print(f"initialised from {args.init_from}")
    for i, stage_cfg in enumerate(stages):
        if args.from_stage <= i < (len(stages) if args.until_stage is None else args.until_stage):
            module = run_stage(stage_cfg, tok, out, module, i)
            print(f"tiny model: {sum(p.numel() for p in module.model.parameters()) / 1e6:.2f}M parameters")
    module.model.to("cpu").float()
    export(module, tok, out)
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
