"""Decoding settings and results."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

CACHES = ("none", "prefix", "dual")  # Fast-dLLM's KV caches (learn2pd.decoding.runner)


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
    cache: str = "none"  # Fast-dLLM's KV caches: none, prefix or dual

    def validate(self) -> None:
        if self.gen_length <= 0 or self.block_length <= 0:
            raise DecodeError(f"gen_length ({self.gen_length}) and block_length ({self.block_length}) must be > 0")
        if self.gen_length % self.block_length:
            fit = self.gen_length // self.block_length * self.block_length or self.block_length
            raise DecodeError(f"gen_length {self.gen_length} is not a multiple of block_length {self.block_length}: "
                              f"pick e.g. --gen-length {fit}")
        num_blocks = self.gen_length // self.block_length
        if self.total_steps % num_blocks or self.total_steps <= 0:
            fit = max(1, round(self.total_steps / num_blocks)) * num_blocks
            raise DecodeError(f"steps {self.total_steps} must be a positive multiple of the number of blocks "
                              f"({num_blocks}): pick e.g. --steps {fit}")
        if self.remasking not in ("low_confidence", "random"):
            raise DecodeError(f"remasking must be 'low_confidence' or 'random', got {self.remasking!r}")
        if self.temperature < 0:
            raise DecodeError(f"temperature must be >= 0, got {self.temperature}")
        if self.cache not in CACHES:
            raise DecodeError(f"cache must be none, prefix or dual, got {self.cache!r}")
        if self.cache != "none" and self.cfg_scale > 0:
            raise DecodeError("classifier-free guidance does not run with a KV cache: use --cache none or "
                              "--cfg-scale 0")

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
    commits: list[list[int]]  # per row: tokens committed at each of its steps (EoTP's cut token included)
    wall_time_s: float
    positions: torch.Tensor  # [B] token positions each row fed to the model, summed over forwards
    texts: list[str] = field(default_factory=list)
    latency_s: torch.Tensor | None = None  # [B] seconds of the batch each row was decoded in
