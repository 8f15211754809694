"""Semi-autoregressive block decoding of masked dLLMs, batched, with per-row progress.

Each row of the batch has its own current block and step counter: a row whose block is finished moves
on while others keep working, and a finished row leaves the batch, so it costs no further forwards.
NFE is counted per row (forwards that row took part in) and per batch (model calls).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from learn2pd.decoding.policies.base import Policy
from learn2pd.decoding.runner import ModelRunner
from learn2pd.decoding.state import StepState
from learn2pd.models.spec import ModelSpec


class DecodeError(ValueError):
    """A decoding setting or input a user can fix (the message says how)."""


@dataclass
class DecodeConfig:
    gen_length: int = 128
    block_length: int = 32
    steps: int | None = None  # total forwards of the baseline schedule; default gen_length
    temperature: float = 0.0
    cfg_scale: float = 0.0
    remasking: str = "low_confidence"  # or "random"
    seed: int = 0

    def validate(self) -> None:
        if self.gen_length <= 0 or self.block_length <= 0:
            raise DecodeError(f"gen_length ({self.gen_length}) and block_length ({self.block_length}) must be > 0")
        if self.gen_length % self.block_length:
            raise DecodeError(f"gen_length {self.gen_length} is not a multiple of block_length {self.block_length}: "
                              f"pick e.g. --gen-length {self.gen_length // self.block_length * self.block_length or self.block_length}")
        num_blocks = self.gen_length // self.block_length
        if self.total_steps % num_blocks or self.total_steps <= 0:
            raise DecodeError(f"steps {self.total_steps} must be a positive multiple of the number of blocks ({num_blocks})")
        if self.remasking not in ("low_confidence", "random"):
            raise DecodeError(f"remasking must be 'low_confidence' or 'random', got {self.remasking!r}")
        if self.temperature < 0:
            raise DecodeError(f"temperature must be >= 0, got {self.temperature}")

    @property
    def total_steps(self) -> int:
        return self.steps if self.steps is not None else self.gen_length

    @property
    def steps_per_block(self) -> int:
        return self.total_steps // (self.gen_length // self.block_length)


@dataclass
class DecodeOutput:
    sequences: torch.Tensor  # [B, gen_length] generated ids (the prompt is not included)
    nfe: torch.Tensor  # [B] forwards each row took part in
    model_calls: int  # forwards of the batch (what the hardware ran)
    commits: list[list[int]]  # per row: tokens committed at each of its steps
    wall_time_s: float
    texts: list[str] = field(default_factory=list)

    @property
    def tokens_per_forward(self) -> torch.Tensor:
        return self.sequences.shape[1] / self.nfe.float()


def _sample(logits: torch.Tensor, cfg: DecodeConfig, generator: torch.Generator | None):
    """Predicted tokens and their confidences, as LLaDA does: Gumbel-max in float64, softmax in float64."""
    logits64 = logits.double()
    if cfg.temperature > 0:
        u = torch.rand(logits64.shape, dtype=torch.float64, device=logits.device, generator=generator)
        tokens = (logits64.exp() / (-torch.log(u)) ** cfg.temperature).argmax(-1)
    else:
        tokens = logits64.argmax(-1)
    if cfg.remasking == "random":
        conf = torch.rand(tokens.shape, dtype=torch.float64, device=logits.device, generator=generator)
    else:
        conf = F.softmax(logits64, dim=-1).gather(-1, tokens[..., None]).squeeze(-1)
    return tokens, conf


def decode(
    model,
    spec: ModelSpec,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    policy: Policy,
    cfg: DecodeConfig,
) -> DecodeOutput:
    """Decode a left-padded prompt batch ([B, P] ids and attention mask) with `policy`."""
    cfg.validate()
    device = prompt_ids.device
    B, P = prompt_ids.shape
    G, blk, spb = cfg.gen_length, cfg.block_length, cfg.steps_per_block
    if spec.context_length and P + G > spec.context_length:
        raise DecodeError(f"prompt ({P} tokens) + gen_length ({G}) exceeds the model's context of "
                          f"{spec.context_length} tokens: shorten the prompt or lower --gen-length")
    generator = torch.Generator(device=device).manual_seed(cfg.seed) if cfg.temperature > 0 or \
        cfg.remasking == "random" else None
    runner = ModelRunner(model, spec, cfg.cfg_scale)

    x = torch.cat([prompt_ids, torch.full((B, G), spec.mask_id, dtype=torch.long, device=device)], 1)
    attn = torch.cat([prompt_mask.long(), torch.ones((B, G), dtype=torch.long, device=device)], 1)
    pos = torch.arange(G, device=device)
    block_start = torch.zeros(B, dtype=torch.long, device=device)
    block_end = torch.full((B,), blk, dtype=torch.long, device=device)
    step_in_block = torch.zeros(B, dtype=torch.long, device=device)
    block_masks = torch.full((B,), blk, dtype=torch.long, device=device)  # masks at block start (schedule)
    nfe = torch.zeros(B, dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    commits: list[list[int]] = [[] for _ in range(B)]
    model_calls = 0
    start = time.perf_counter()

    while not bool(done.all()):
        rows = (~done).nonzero().squeeze(1)
        xs = x[rows]
        logits = runner.logits(xs, attn[rows], P)[:, P:]
        model_calls += 1
        nfe[rows] += 1
        tokens, conf = _sample(logits, cfg, generator)

        gen = xs[:, P:]
        masked = gen == spec.mask_id
        bs, be, sib = block_start[rows], block_end[rows], step_in_block[rows]
        in_block = (pos >= bs[:, None]) & (pos < be[:, None])
        # LLaDA schedule: a block's masks split evenly over its steps, remainder to the earliest steps.
        n0 = block_masks[rows]
        quota = n0 // spb + (sib < n0 % spb).long()
        state = StepState(conf, tokens, masked, in_block, sib, quota, rows,
                          logits if policy.needs_logits else None)
        commit = policy.select(state) & state.candidates
        gen = torch.where(commit, tokens, gen)
        x[rows, P:] = gen
        for r, c in zip(rows.tolist(), commit.sum(-1).tolist()):
            commits[r].append(c)

        # Advance rows whose block has no mask left.
        step_in_block[rows] += 1
        finished = ~((gen == spec.mask_id) & in_block).any(-1)
        if bool(finished.any()):
            fr = rows[finished]
            block_start[fr] = block_end[fr]
            block_end[fr] = torch.clamp(block_end[fr] + blk, max=G)
            step_in_block[fr] = 0
            block_masks[fr] = block_end[fr] - block_start[fr]
            done[fr] = block_start[fr] >= G

    return DecodeOutput(x[:, P:].clone(), nfe, model_calls, commits, time.perf_counter() - start)


def decode_text(tokenizer, spec: ModelSpec, ids: torch.Tensor) -> str:
    """Text of one generated row, cut at the first end token."""
    ids = ids.tolist()
    for i, t in enumerate(ids):
        if t in spec.end_ids:
            ids = ids[:i]
            break
    return tokenizer.decode([t for t in ids if t != spec.mask_id], skip_special_tokens=True)


def generate(model, tokenizer, prompts: list[str], policy: str | Policy = "vanilla",
             config: DecodeConfig | None = None, spec: ModelSpec | None = None,
             batch_size: int = 32) -> DecodeOutput:
    """Decode a list of questions (chat template applied when the tokenizer has one).

    Returns one DecodeOutput over all prompts; `texts` holds the decoded answers.
    """
    from learn2pd.decoding.policies import make_policy
    from learn2pd.models.spec import spec_from_model
    from learn2pd.tasks.prompting import format_prompt, left_pad

    config = config or DecodeConfig()
    spec = spec or spec_from_model(model, tokenizer)
    policy = make_policy(policy)
    if isinstance(prompts, str):
        prompts = [prompts]
    device = next(model.parameters()).device
    outs = []
    for i in range(0, len(prompts), batch_size):
        encoded = [format_prompt(tokenizer, p) for p in prompts[i:i + batch_size]]
        empty = [i + j for j, e in enumerate(encoded) if not e]
        if empty:
            raise DecodeError(f"prompt #{empty[0]} is empty after tokenization")
        ids, mask = left_pad(encoded, spec.pad_id)
        outs.append(decode(model, spec, ids.to(device), mask.to(device), policy, config))
    out = DecodeOutput(
        sequences=torch.cat([o.sequences for o in outs]),
        nfe=torch.cat([o.nfe for o in outs]),
        model_calls=sum(o.model_calls for o in outs),
        commits=[c for o in outs for c in o.commits],
        wall_time_s=sum(o.wall_time_s for o in outs),
    )
    out.texts = [decode_text(tokenizer, spec, row) for row in out.sequences.cpu()]
    return out
