"""Where each row of a batch is in the semi-autoregressive schedule.

Rows are independent: each has its own block, step counter, end of generation (End-of-Text Prediction
moves it left) and counts; a row whose block has no mask left moves on, a row past its end is done.
All fields are [B] tensors; positions are relative to the generation region.
"""

from __future__ import annotations

import torch


class RowProgress:
    def __init__(self, batch: int, gen_length: int, steps_per_block: int, device):
        z = lambda: torch.zeros(batch, dtype=torch.long, device=device)  # noqa: E731
        self.gen_length, self.steps_per_block = gen_length, steps_per_block
        self.block_start, self.block_end, self.step, self.block_masks = z(), z(), z(), z()
        self.gen_end = torch.full((batch,), gen_length, dtype=torch.long, device=device)
        self.nfe, self.positions = z(), z()  # forwards each row took part in; positions it fed
        self.done = torch.zeros(batch, dtype=torch.bool, device=device)

    def active(self) -> torch.Tensor:
        """Rows still decoding."""
        return (~self.done).nonzero().squeeze(1)

    def input_end(self, rows: torch.Tensor, drop_cut: bool) -> torch.Tensor:
        """[R] where each row's input ends: at its End-of-Text cut when cut positions leave the input."""
        return self.gen_end[rows] if drop_cut else torch.full_like(rows, self.gen_length)

    def horizon(self, rows: torch.Tensor, scheduler) -> torch.Tensor:
        """[R] end of the positions whose predictions are read this step: the block, or at a block's first
        step (its end not chosen yet) as far as the scheduler looks."""
        first = self.step[rows] == 0
        ahead = scheduler.horizon(self.block_start[rows], self.gen_end[rows])
        return torch.where(first, ahead, self.block_end[rows])

    def open_blocks(self, rows: torch.Tensor, ends: torch.Tensor, masked: torch.Tensor) -> None:
        """At a block's first step (of these rows): record the end the scheduler chose and the masks the
        block holds (the LLaDA schedule splits them evenly over the block's steps)."""
        self.block_end[rows] = ends
        self.block_masks[rows] = (masked & self.in_block(rows, masked.shape[1])).sum(-1)

    def in_block(self, rows: torch.Tensor, width: int) -> torch.Tensor:
        pos = torch.arange(width, device=rows.device)
        return (pos >= self.block_start[rows, None]) & (pos < self.block_end[rows, None])

    def quota(self, rows: torch.Tensor) -> torch.Tensor:
        """LLaDA's schedule: the block's masks split evenly over its steps, remainder to the earliest steps."""
        n0, step = self.block_masks[rows], self.step[rows]
        return n0 // self.steps_per_block + (step < n0 % self.steps_per_block).long()

    def count_forward(self, rows: torch.Tensor, fed: torch.Tensor) -> None:
        self.nfe[rows] += 1
        self.positions[rows] += fed

    def advance(self, rows: torch.Tensor, still_masked: torch.Tensor) -> None:
        """After a step: rows whose block (up to the possibly cut end) has no mask left move to the next
        block; past the end they are done. still_masked: [R, W] masks left in each row."""
        self.step[rows] += 1
        pos = torch.arange(still_masked.shape[1], device=rows.device)
        end = torch.minimum(self.block_end[rows], self.gen_end[rows])
        left = (still_masked & (pos >= self.block_start[rows, None]) & (pos < end[:, None])).any(-1)
        moved = rows[~left]
        if moved.numel():
            self.block_start[moved] = torch.minimum(self.block_end[moved], self.gen_end[moved])
            self.step[moved] = 0
            self.done[moved] = self.block_start[moved] >= self.gen_end[moved]
