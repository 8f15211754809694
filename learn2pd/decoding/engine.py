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

from learn2pd.decoding.plan import DecodingPlan
from learn2pd.decoding.policies.base import Policy
from learn2pd.decoding.runner import ModelRunner
from learn2pd.decoding.schedulers import FixedBlocks
from learn2pd.decoding.state import NEG_INF, StepState
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
            fit = self.gen_length // self.block_length * self.block_length or self.block_length
            raise DecodeError(f"gen_length {self.gen_length} is not a multiple of block_length {self.block_length}: "
                              f"pick e.g. --gen-length {fit}")
        num_blocks = self.gen_length // self.block_length
        if self.total_steps % num_blocks or self.total_steps <= 0:
            raise DecodeError(f"steps {self.total_steps} must be a positive multiple of the number of blocks "
                              f"({num_blocks})")
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
    positions: torch.Tensor | None = None  # [B] token positions each row fed to the model, summed over forwards
    texts: list[str] = field(default_factory=list)

    @property
    def tokens_per_forward(self) -> torch.Tensor:
        return self.sequences.shape[1] / self.nfe.float()


def _sample(logits: torch.Tensor, cfg: DecodeConfig, generator: torch.Generator | None, mask_id: int):
    """Predicted tokens and their confidences, as LLaDA does: Gumbel-max in float64, softmax in float64.

    The mask token is never a prediction (committing it would never finish the block); confidences
    still come from the full softmax, so a trained model, which never predicts it, is unaffected.
    """
    logits64 = logits.double()
    scores = logits64.clone()
    scores[..., mask_id] = float("-inf")
    if cfg.temperature > 0:
        u = torch.rand(logits64.shape, dtype=torch.float64, device=logits.device, generator=generator)
        tokens = (scores.exp() / (-torch.log(u)) ** cfg.temperature).argmax(-1)
    else:
        tokens = scores.argmax(-1)
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
    plan: DecodingPlan | Policy | str,
    cfg: DecodeConfig,
    reference: torch.Tensor | None = None,
    observer=None,
) -> DecodeOutput:
    """Decode a left-padded prompt batch ([B, P] ids and attention mask).

    plan: a policy, a DecodingPlan (policy + block scheduler + EoTP) or a spec string such as
    `threshold:tau=0.9+adablock+eotp`. reference: [B, gen_length] tokens for the oracle policy.
    observer: called after each step as `observer(state, commit, logits)` (trace collection).
    """
    from learn2pd.decoding.policies import make_plan

    cfg.validate()
    plan = make_plan(plan)
    policy, scheduler = plan.policy, plan.scheduler or FixedBlocks(cfg.block_length)
    device = prompt_ids.device
    B, P = prompt_ids.shape
    G, spb = cfg.gen_length, cfg.steps_per_block
    if spec.context_length and P + G > spec.context_length:
        raise DecodeError(f"prompt ({P} tokens) + gen_length ({G}) exceeds the model's context of "
                          f"{spec.context_length} tokens: shorten the prompt or lower --gen-length")
    if getattr(policy, "needs_reference", False) and reference is None:
        raise DecodeError(f"policy {policy.name!r} needs reference tokens (run vanilla first)")
    if hasattr(policy, "check"):
        policy.check(cfg, spec)
    if hasattr(policy, "reset"):
        policy.reset(B, G, device)
    generator = torch.Generator(device=device).manual_seed(cfg.seed) if cfg.temperature > 0 or \
        cfg.remasking == "random" else None
    runner = ModelRunner(model, spec, cfg.cfg_scale)

    x = torch.cat([prompt_ids, torch.full((B, G), spec.mask_id, dtype=torch.long, device=device)], 1)
    attn = torch.cat([prompt_mask.long(), torch.ones((B, G), dtype=torch.long, device=device)], 1)
    prompt_len = prompt_mask.long().sum(1)
    pos = torch.arange(G, device=device)
    gen_end = torch.full((B,), G, dtype=torch.long, device=device)  # EoTP moves it left
    block_start = torch.zeros(B, dtype=torch.long, device=device)
    block_end = torch.zeros(B, dtype=torch.long, device=device)  # set at each block's first step
    step_in_block = torch.zeros(B, dtype=torch.long, device=device)
    block_masks = torch.zeros(B, dtype=torch.long, device=device)  # masks in the block at its first step
    nfe = torch.zeros(B, dtype=torch.long, device=device)
    positions = torch.zeros(B, dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    commits: list[list[int]] = [[] for _ in range(B)]
    model_calls = 0
    start = time.perf_counter()

    while not bool(done.all()):
        rows = (~done).nonzero().squeeze(1)
        # Positions cut by EoTP leave the input, unless the plan keeps them as EOS context.
        input_end = gen_end[rows] if plan.eotp_drop else torch.full_like(gen_end[rows], G)
        width = int(input_end.max())
        live = pos[:width] < input_end[:, None]
        xs = x[rows, :P + width]
        am = torch.cat([attn[rows, :P], live.long()], 1)
        logits = runner.logits(xs, am, P)[:, P:]
        model_calls += 1
        nfe[rows] += 1
        positions[rows] += prompt_len[rows] + input_end
        tokens, conf = _sample(logits, cfg, generator, spec.mask_id)
        gen = xs[:, P:]
        masked = gen == spec.mask_id
        bs, ge, sib = block_start[rows], gen_end[rows], step_in_block[rows]

        # A block's end is chosen at its first step, from this same forward (AdaBlock costs no NFE).
        be = block_end[rows]
        first = sib == 0
        if bool(first.any()):
            be = torch.where(first, scheduler.block_end(tokens, conf, bs, ge, G, spec), be)
            block_end[rows] = be
        in_block = (pos[:width] >= bs[:, None]) & (pos[:width] < be[:, None])
        # LLaDA schedule: the block's masks split evenly over its steps, remainder to the earliest steps.
        if bool(first.any()):
            block_masks[rows] = torch.where(first, (masked & in_block).sum(-1), block_masks[rows])
        n0 = block_masks[rows]
        quota = n0 // spb + (sib < n0 % spb).long()
        state = StepState(conf, tokens, masked, in_block, sib, quota, rows,
                          logits if policy.needs_logits else None,
                          reference[rows, :width] if reference is not None else None)
        commit = policy.select(state) & state.candidates
        if observer is not None:
            observer(state, commit, logits)
        gen = torch.where(commit, state.tokens, gen)
        if plan.eotp:
            gen, ge = _end_of_text_cut(gen, state, commit, spec, ge, policy)
            gen_end[rows] = ge
        x[rows, P:P + width] = gen
        for r, c in zip(rows.tolist(), commit.sum(-1).tolist()):
            commits[r].append(c)

        # Rows whose block has no mask left move on; past the (possibly cut) end they are done.
        step_in_block[rows] += 1
        finished = ~((gen == spec.mask_id) & (pos[:width] < torch.minimum(be, ge)[:, None])
                     & (pos[:width] >= bs[:, None])).any(-1)
        if bool(finished.any()):
            fr = rows[finished]
            block_start[fr] = torch.minimum(block_end[fr], gen_end[fr])
            step_in_block[fr] = 0
            done[fr] = block_start[fr] >= gen_end[fr]

    return DecodeOutput(x[:, P:].clone(), nfe, model_calls, commits, time.perf_counter() - start,
                        positions=positions)


def _end_of_text_cut(gen, state, commit, spec, gen_end, policy):
    """EoTP: once a candidate of the block predicts an end token, the answer ends there.

    The cut is the policy's choice when it has one (the learned filter's first accepted end token),
    else the most confident end prediction of the block. The token there is committed, the rest of
    the row becomes EOS and leaves the input (shorter forwards, no block past the end).
    """
    is_end = state.candidates & torch.isin(state.tokens, torch.tensor(spec.end_ids, device=gen.device))
    if not bool(is_end.any()):
        return gen, gen_end
    chooser = getattr(policy, "end_of_text_position", None)
    cut = chooser(state, is_end) if chooser else state.confidence.masked_fill(~is_end, NEG_INF).argmax(-1)
    has = is_end.any(-1) & (cut >= 0)  # a chooser may decline to cut (-1)
    pos = torch.arange(gen.shape[1], device=gen.device)
    at_cut = has[:, None] & (pos == cut[:, None])
    after = has[:, None] & (pos > cut[:, None])
    gen = torch.where(at_cut & (gen == spec.mask_id), state.tokens, gen)
    gen = torch.where(after, torch.full_like(gen, spec.eos_id), gen)
    return gen, torch.where(has, torch.minimum(cut + 1, gen_end), gen_end)


def decode_text(tokenizer, spec: ModelSpec, ids: torch.Tensor) -> str:
    """Text of one generated row, cut at the first end token."""
    ids = ids.tolist()
    for i, t in enumerate(ids):
        if t in spec.end_ids:
            ids = ids[:i]
            break
    return tokenizer.decode([t for t in ids if t != spec.mask_id], skip_special_tokens=True)


def generate(model, tokenizer, prompts: list[str], policy: str | Policy | DecodingPlan = "vanilla",
             config: DecodeConfig | None = None, spec: ModelSpec | None = None,
             batch_size: int = 32) -> DecodeOutput:
    """Decode a list of questions (chat template applied when the tokenizer has one).

    Returns one DecodeOutput over all prompts; `texts` holds the decoded answers.
    """
    from learn2pd.decoding.policies import make_plan
    from learn2pd.models.spec import spec_from_model
    from learn2pd.tasks.prompting import format_prompt, left_pad

    config = config or DecodeConfig()
    spec = spec or spec_from_model(model, tokenizer)
    plan = make_plan(policy)
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
        outs.append(decode(model, spec, ids.to(device), mask.to(device), plan, config))
    out = DecodeOutput(
        sequences=torch.cat([o.sequences for o in outs]),
        nfe=torch.cat([o.nfe for o in outs]),
        model_calls=sum(o.model_calls for o in outs),
        commits=[c for o in outs for c in o.commits],
        wall_time_s=sum(o.wall_time_s for o in outs),
        positions=torch.cat([o.positions for o in outs]),
    )
    out.texts = [decode_text(tokenizer, spec, row) for row in out.sequences.cpu()]
    return out
