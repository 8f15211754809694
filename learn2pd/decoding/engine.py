"""Semi-autoregressive block decoding of masked dLLMs, batched, with per-row progress.

Each row of the batch has its own current block and step counter: a row whose block is finished moves
on while others keep working, and a finished row leaves the batch, so it costs no further forwards.
NFE is counted per row (forwards that row took part in) and per batch (model calls).

The pieces: `RowProgress` (where each row is), `ModelRunner` (the only caller of the model, told what
each step feeds), `sample` (tokens and confidences), the plan's policy and scheduler (what to commit,
where a block ends), `EndOfText` (where the answer ends), and an optional observer (trace recording).
"""

from __future__ import annotations

import time

import torch

from learn2pd.decoding.config import DecodeConfig, DecodeError, DecodeOutput
from learn2pd.decoding.eotp import EndOfText
from learn2pd.decoding.plan import DecodingPlan, make_plan
from learn2pd.decoding.policies.base import Policy
from learn2pd.decoding.progress import RowProgress
from learn2pd.decoding.runner import Feed, ModelRunner
from learn2pd.decoding.sampling import sample_fed
from learn2pd.decoding.state import StepState
from learn2pd.models.spec import ModelSpec

__all__ = ["DecodeConfig", "DecodeError", "DecodeOutput", "decode", "decode_text"]


@torch.no_grad()
def decode(
    model,
    spec: ModelSpec,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    plan: DecodingPlan | Policy | str,
    cfg: DecodeConfig,
    reference: torch.Tensor | None = None,
    observer=None,
    on_step=None,
) -> DecodeOutput:
    """Decode a left-padded prompt batch ([B, P] ids and attention mask).

    plan: a policy, a DecodingPlan (policy + block scheduler + EoTP) or a spec string such as
    `threshold:tau=0.9+adablock+eotp`. reference: [B, gen_length] tokens for the oracle policy.
    observer: called after each step as `observer(state, commit)` (trace collection); the state holds the
    model's own predictions and this step's logits. on_step: called after each step as
    `on_step(tokens_committed)` (progress within a batch; nothing in the loop prints).
    """
    cfg.validate()
    plan = make_plan(plan)
    policy, scheduler = plan.policy, plan.block_scheduler()
    device = prompt_ids.device
    B, P = prompt_ids.shape
    G = cfg.gen_length
    if spec.context_length and P + G > spec.context_length:
        raise DecodeError(f"prompt ({P} tokens) + gen_length ({G}) exceeds the model's context of "
                          f"{spec.context_length} tokens: shorten the prompt or lower --gen-length")
    if policy.needs_reference and reference is None:
        raise DecodeError(f"policy {policy.name!r} needs reference tokens (run vanilla first)")
    if cfg.cache != "none" and not getattr(model, "supports_kv_cache", False):  # a model class's own flag
        raise DecodeError(f"{type(model).__name__} has no KV-cache support in learn2pd: use --cache none")
    policy.check(cfg, spec)
    policy.reset(B, G, device)
    scheduler.bind(cfg, spec)
    eot = EndOfText(spec, plan.eotp_drop) if plan.eotp else None
    generator = torch.Generator(device=device).manual_seed(cfg.seed) if cfg.temperature > 0 or \
        cfg.remasking == "random" else None
    runner = ModelRunner(model, spec, cfg.cfg_scale, cfg.cache, B, P + G)
    progress = RowProgress(B, G, cfg.steps_per_block, device)

    x = torch.cat([prompt_ids, torch.full((B, G), spec.mask_id, dtype=torch.long, device=device)], 1)
    attn = torch.cat([prompt_mask.long(), torch.ones((B, G), dtype=torch.long, device=device)], 1)
    pos = torch.arange(G, device=device)
    commits: list[list[int]] = [[] for _ in range(B)]
    start = time.perf_counter()

    while (rows := progress.active()).numel():
        input_end = progress.input_end(rows, plan.eotp_drop)
        width = int(input_end.max())
        live = pos[:width] < input_end[:, None]
        first = progress.step[rows] == 0
        feed = Feed(rows, x[rows, :P + width], torch.cat([attn[rows, :P], live.long()], 1), P, live,
                    progress.block_start[rows], progress.block_end[rows], first, input_end)
        logits, fed = runner.logits(feed)
        progress.count_forward(rows, fed)

        # Predictions are read in the block (and, at a block's first step, as far as the scheduler looks).
        horizon = progress.horizon(rows, scheduler)
        need = (pos[:width] >= progress.block_start[rows, None]) & (pos[:width] < horizon[:, None])
        tokens, conf = sample_fed(logits, need, spec.mask_id, cfg.temperature, cfg.remasking == "random",
                                  generator)
        gen = feed.ids[:, P:]
        masked = gen == spec.mask_id
        if bool(first.any()):  # a block's end is chosen from its first forward (AdaBlock costs no NFE)
            opening = rows[first]
            ends = scheduler.block_end(tokens[first], conf[first], logits.values[first][:, :width],
                                       progress.block_start[opening], progress.gen_end[opening])
            progress.open_blocks(opening, ends, masked[first])

        state = StepState(conf, tokens, masked, progress.in_block(rows, width), progress.step[rows],
                          progress.quota(rows), rows, logits if policy.needs_logits or observer else None,
                          reference[rows, :width] if reference is not None else None, P)
        commit = policy.select(state) & state.candidates
        if observer is not None:
            observer(state, commit)
        gen = torch.where(commit, policy.commit_tokens(state, commit), gen)
        if eot is not None:
            gen, commit, progress.gen_end[rows] = eot.cut(gen, state, commit, policy, progress.gen_end[rows])
        x[rows, P:P + width] = gen
        counts = commit.sum(-1).tolist()
        for r, c in zip(rows.tolist(), counts):
            commits[r].append(c)
        if on_step is not None:
            on_step(sum(counts))
        progress.advance(rows, gen == spec.mask_id)

    return DecodeOutput(x[:, P:].clone(), progress.nfe, runner.calls, commits, time.perf_counter() - start,
                        positions=progress.positions)


def decode_text(tokenizer, spec: ModelSpec, ids: torch.Tensor) -> str:
    """Text of one generated row, cut at the first end token."""
    ids = ids.tolist()
    for i, t in enumerate(ids):
        if t in spec.end_ids:
            ids = ids[:i]
            break
    return tokenizer.decode([t for t in ids if t != spec.mask_id], skip_special_tokens=True)
