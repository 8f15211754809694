"""`learn2pd evaluate --devices N`: the problems sharded over N Lightning Fabric processes, one model each.

Every process loads the model on its own device (cuda:LOCAL_RANK, or the CPU under gloo) and decodes its
shard of each plan with the batching of a one-process run (batches of similar length); the shards are
gathered after each plan, so the oracle finds the whole vanilla decode as its reference. The process that
called `evaluate_parallel` (rank 0, or the main process that spawned the ranks) grades the outputs and
builds the report of `evaluate`: the per-problem records in the original problem order, `wall_time_s` of
a plan from the moment every rank starts it to the moment the last one ends, tokens/s over that time.

Shards: the problems sorted by prompt length and dealt round robin, so every rank gets prompts of every
length (the same work, the same padding as one process would have). Rows decode independently of their
batch, so greedy outputs, grades and NFE equal a one-process run's.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from learn2pd.decoding.batching import encode_prompts
from learn2pd.decoding.config import DecodeConfig, DecodeOutput
from learn2pd.evaluation.runner import compare, decode_plans, decode_problems, plan_order

log = logging.getLogger(__name__)
STRATEGIES = ("ddp_spawn", "ddp")  # spawn: one command starts the ranks; ddp: under torchrun / SLURM, or re-run


@dataclass
class _Failure:
    """A user's mistake met on some rank (a prompt too long, a bad model folder): every rank stops with it."""

    message: str


def shard(lengths: Sequence[int], rank: int, world: int) -> list[int]:
    """The indices rank `rank` of `world` decodes: sorted by length (stable), dealt round robin."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return order[rank::world]


def merge(parts: Sequence[tuple[list[int], DecodeOutput]], n: int) -> DecodeOutput:
    """Each rank's (indices, decode) as one decode in the original order. The wall time is the slowest rank's
    (they start together), the model calls are summed."""
    seqs: list = [None] * n
    texts: list = [None] * n
    nfe, positions, latency = torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long), torch.zeros(n)
    for idx, out in parts:
        for row, i in enumerate(idx):
            seqs[i], texts[i] = out.sequences[row], out.texts[row]
            nfe[i], positions[i], latency[i] = out.nfe[row], out.positions[row], out.latency_s[row]
    return DecodeOutput(torch.stack(seqs), nfe, sum(out.model_calls for _, out in parts), [[] for _ in range(n)],
                        max(out.wall_time_s for _, out in parts), positions, texts, latency_s=latency)


def _all_gather(value):
    """Every rank's value, on every rank; a failure on any rank is raised on all of them."""
    parts = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(parts, value)
    failed = next((p for p in parts if isinstance(p, _Failure)), None)
    if failed is not None:
        raise ValueError(failed.message)
    return parts


def _attempt(fn, *args):
    from learn2pd.errors import USER_ERRORS

    try:
        return fn(*args)
    except USER_ERRORS as err:
        return _Failure(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)


class _ShardedDecode:
    """`decode_problems` over this rank's shard, gathered: every rank gets the whole decode."""

    def __init__(self, fabric, lengths: list[int]):
        self.fabric = fabric
        self.mine = shard(lengths, fabric.global_rank, fabric.world_size)

    def __call__(self, model, tokenizer, spec, prompts, plan, config, batch_size, progress, references):
        refs = [references[i] for i in self.mine] if references is not None else None
        self.fabric.barrier()  # every rank starts the plan together: the slowest rank's time is the plan's wall time
        out = _attempt(decode_problems, model, tokenizer, spec, [prompts[i] for i in self.mine], plan, config,
                       batch_size, progress, refs)
        if not isinstance(out, _Failure):
            out.commits, out.sequences = [], out.sequences.cpu()  # commits are not reported; tensors travel on CPU
        parts = _all_gather(out if isinstance(out, _Failure) else (self.mine, out))
        return merge(parts, len(prompts))


def _rank(fabric, model_args: dict, prompts: list[str], policies: list[str], config: DecodeConfig,
          batch_size: int, progress: bool):
    """One process: load the model on this rank's device, decode every plan over the shards. Rank 0 returns
    the file holding the spec and each plan's whole decode, the other ranks None; any rank the first failure."""
    from learn2pd.models.loading import load_model

    torch.manual_seed(config.seed)  # (Lightning's launchers give each CPU process its share of the cores)
    try:
        loaded = _attempt(load_model, model_args["model"], model_args["dtype"], str(fabric.device),
                          model_args["trust_remote_code"])
        _all_gather(loaded if isinstance(loaded, _Failure) else None)  # no rank goes on when one cannot load
        model, tok, spec = loaded
        lengths = [len(e) for e in encode_prompts(tok, prompts)]
        outs = decode_plans(model, tok, spec, prompts, plan_order(policies), config, batch_size,
                            progress and fabric.global_rank == 0, decode=_ShardedDecode(fabric, lengths))
    except ValueError as err:  # gathered from a rank: the same on every rank
        return _Failure(str(err))
    if fabric.global_rank != 0:
        return None
    # Through a file: Lightning's spawn launcher reads rank 0's return value only once every rank has exited,
    # so a value larger than a pipe's buffer would never be read (and tensors would arrive as handles to the
    # memory of a process that has exited).
    fd, path = tempfile.mkstemp(prefix="learn2pd-evaluate-", suffix=".pt")
    with os.fdopen(fd, "wb") as f:
        torch.save((spec, outs), f)
    return path


def evaluate_parallel(model_args: dict, problems, policies: list[str], config: DecodeConfig, batch_size: int = 64,
                      progress: bool = True, devices: int = 2, num_nodes: int = 1,
                      strategy: str = "ddp_spawn") -> dict | None:
    """`evaluate` over devices x num_nodes processes; the report on the global rank 0 (or in the main process
    that spawned the ranks), None on the other ranks.

    model_args: `model` (folder or hub id, None for the embedded one), `dtype`, `device` (cpu or cuda: each
    rank takes cuda:LOCAL_RANK), `trust_remote_code`.
    """
    from lightning.fabric import Fabric

    if not problems:
        raise ValueError("no problems to evaluate: the task source is empty")
    if strategy not in STRATEGIES:
        raise ValueError(f"--strategy {strategy}: choose from {', '.join(STRATEGIES)}")
    accelerator = "cpu" if torch.device(model_args["device"]).type == "cpu" else "cuda"
    if accelerator == "cpu" and torch.cuda.is_available():
        log.warning("learn2pd: %d CPU processes decode (--device cpu); pass --device cuda for the GPUs",
                    devices * num_nodes)
    fabric = Fabric(accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy)
    start = time.perf_counter()
    got = fabric.launch(_rank, model_args, [p.prompt for p in problems], list(policies), config, batch_size,
                        progress)
    if isinstance(got, _Failure):
        raise ValueError(got.message)
    if got is None:  # not rank 0 (ddp: every process runs this)
        return None
    try:
        spec, outs = torch.load(got, weights_only=False)
    finally:
        os.unlink(got)
    report = compare(plan_order(policies), problems, outs, spec, config)
    report["processes"] = {"devices": devices, "num_nodes": num_nodes, "strategy": strategy,
                           "world_size": devices * num_nodes, "run_s": time.perf_counter() - start}
    return report
