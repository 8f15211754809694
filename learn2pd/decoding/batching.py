"""From questions to decoded texts, one path for `generate`, evaluation and trace collection: format the
prompts, batch them by length (little padding), left-pad, decode, cut the texts, restore the order."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

from learn2pd.decoding.config import DecodeConfig, DecodeError, DecodeOutput
from learn2pd.decoding.engine import decode, decode_text
from learn2pd.decoding.plan import DecodingPlan, make_plan
from learn2pd.decoding.policies.base import Policy
from learn2pd.models.spec import ModelSpec
from learn2pd.tasks.prompting import format_prompt, left_pad


def encode_prompts(tokenizer, questions: Sequence[str]) -> list[list[int]]:
    """Token ids of each question (chat template applied when the tokenizer has one)."""
    return [format_prompt(tokenizer, q) for q in questions]


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (sorted, stable): left padding costs compute."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def decode_batch(model, tokenizer, spec: ModelSpec, encoded: Sequence[list[int]], plan, cfg: DecodeConfig,
                 reference: torch.Tensor | None = None, observer=None, on_step=None) -> DecodeOutput:
    """One left-padded batch through the engine; `texts` are cut at the first end token."""
    device = next(model.parameters()).device
    ids, mask = left_pad(list(encoded), spec.pad_id)
    ref = reference.to(device) if reference is not None else None
    out = decode(model, spec, ids.to(device), mask.to(device), plan, cfg, reference=ref, observer=observer,
                 on_step=on_step)
    out.texts = [decode_text(tokenizer, spec, row) for row in out.sequences.cpu()]
    return out


def decode_all(model, tokenizer, spec: ModelSpec, encoded: Sequence[list[int]], plan, cfg: DecodeConfig,
               batch_size: int = 32, references: Sequence[torch.Tensor] | None = None,
               on_batch: Callable[[int], None] | None = None,
               on_step: Callable[[int], None] | None = None) -> DecodeOutput:
    """Every prompt, batched by length; the output is in the input order. `latency_s` of a row is the time
    of the batch it was decoded in. references: per prompt, [gen_length] tokens for the oracle.
    on_batch(prompts done) after each batch, on_step(tokens committed) after each forward."""
    plan = make_plan(plan)
    n = len(encoded)
    seqs: list = [None] * n
    nfe, positions, latency = torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long), torch.zeros(n)
    commits: list = [None] * n
    texts: list = [None] * n
    calls, total = 0, 0.0
    for idx in length_batches([len(e) for e in encoded], batch_size):
        ref = torch.stack([references[i] for i in idx]) if references is not None else None
        t0 = time.perf_counter()
        out = decode_batch(model, tokenizer, spec, [encoded[i] for i in idx], plan, cfg, ref, on_step=on_step)
        elapsed = time.perf_counter() - t0
        total += elapsed
        calls += out.model_calls
        for row, i in enumerate(idx):
            seqs[i], texts[i], commits[i] = out.sequences[row].cpu(), out.texts[row], out.commits[row]
            nfe[i], positions[i], latency[i] = int(out.nfe[row]), int(out.positions[row]), elapsed
        if on_batch is not None:
            on_batch(len(idx))
    sequences = torch.stack(seqs) if n else torch.zeros(0, cfg.gen_length, dtype=torch.long)
    return DecodeOutput(sequences, nfe, calls, commits, total, positions, texts, latency_s=latency)


def generate(model, tokenizer, prompts: str | list[str], policy: str | Policy | DecodingPlan = "vanilla",
             config: DecodeConfig | None = None, spec: ModelSpec | None = None,
             batch_size: int = 32) -> DecodeOutput:
    """Decode questions (chat template applied when the tokenizer has one), batched by length.

    Returns one DecodeOutput over all prompts, in the given order; `texts` holds the decoded answers.
    """
    from learn2pd.models.spec import spec_from_model

    config = config or DecodeConfig()
    spec = spec or spec_from_model(model, tokenizer)
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    encoded = encode_prompts(tokenizer, prompts)
    empty = [i for i, (p, e) in enumerate(zip(prompts, encoded)) if not p.strip() or not e]
    if empty:
        raise DecodeError(f"prompt #{empty[0]} is empty: give each prompt some text")
    return decode_all(model, tokenizer, spec, encoded, policy, config, batch_size)


class StepProgress:
    """Feeds a tqdm bar from inside a batch: forwards so far and committed tokens per second, shown at most
    twice a second (the bar counts prompts, which only move when a batch ends)."""

    def __init__(self, bar, every_s: float = 0.5):
        self.bar, self.every_s = bar, every_s
        self.forwards = self.tokens = 0
        self.start = self.shown = time.perf_counter()

    def __call__(self, committed: int) -> None:
        self.forwards += 1
        self.tokens += committed
        now = time.perf_counter()
        if now - self.shown >= self.every_s:
            self.shown = now
            self.bar.set_postfix_str(f"forwards {self.forwards}, {self.tokens / (now - self.start):.0f} tok/s")
