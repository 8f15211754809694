"""Data-parallel runs: the launcher's environment and the devices a run asks for, checked before any work.

Two launchers start learn2pd's processes: `accelerate launch` / `torchrun` (lm-eval's way: each process runs
the whole command, told its place by RANK, WORLD_SIZE and LOCAL_RANK) and Lightning Fabric (`evaluate
--devices N`: one command starts its N processes; a multi-node run is started on each node with NODE_RANK).
A variable left over from another job, or a launch that sets some variables and not others, would make every
process decode everything or wait forever for a peer: it is refused with one line naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch

# what torchrun, accelerate launch and Lightning set in each process they start
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK")


class LaunchError(ValueError):
    """A launch a user can fix: a launcher variable or a device count (the message says which)."""


@dataclass(frozen=True)
class Launch:
    """This process's place in a launched run."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launch_env(environ: Mapping[str, str] | None = None, needs_rank: bool = False) -> Launch | None:
    """This process's place from the launcher's variables, None outside a launch (or a one-process one).

    needs_rank: the process must be told its RANK whenever WORLD_SIZE says there are several (torchrun and
    accelerate launch set both; Lightning's own children get WORLD_SIZE and LOCAL_RANK only)."""
    env = os.environ if environ is None else environ
    fix = "launch with accelerate launch or torchrun, which set RANK, WORLD_SIZE and LOCAL_RANK, or unset them"
    vals: dict[str, int] = {}
    for name in LAUNCH_VARS:
        if name in env:
            raw = env[name].strip()
            if not raw.isdigit() or (name.endswith("WORLD_SIZE") and int(raw) < 1):
                want = "a positive integer" if name.endswith("WORLD_SIZE") else "an integer >= 0"
                raise LaunchError(f"launcher variable {name}={env[name]!r} is not {want}: {fix}")
            vals[name] = int(raw)
    if "RANK" in vals and "WORLD_SIZE" not in vals:
        raise LaunchError(f"launcher variable RANK={vals['RANK']} is set without WORLD_SIZE: {fix}")
    world = vals.get("WORLD_SIZE", 1)
    if needs_rank and world > 1 and "RANK" not in vals:
        raise LaunchError(f"launcher variable WORLD_SIZE={world} is set without RANK: {fix}")
    if vals.get("RANK", 0) >= world:
        raise LaunchError(f"launcher variable RANK={vals['RANK']} is not below WORLD_SIZE={world}: {fix}")
    local_world = vals.get("LOCAL_WORLD_SIZE", world)
    if vals.get("LOCAL_RANK", 0) >= local_world:
        raise LaunchError(f"launcher variable LOCAL_RANK={vals['LOCAL_RANK']} is not below "
                          f"{'LOCAL_WORLD_SIZE' if 'LOCAL_WORLD_SIZE' in vals else 'WORLD_SIZE'}={local_world}: {fix}")
    if world > 1 and "RANK" in vals and not env.get("MASTER_ADDR"):
        raise LaunchError(f"launcher variables RANK and WORLD_SIZE={world} are set without MASTER_ADDR (the "
                          f"address of rank 0): {fix}")
    if world == 1:
        return None
    return Launch(vals.get("RANK", 0), world, vals.get("LOCAL_RANK", 0))


def check_cuda_rank(local_rank: int) -> None:
    """A process that decodes on cuda:LOCAL_RANK needs that GPU."""
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise LaunchError(f"LOCAL_RANK={local_rank} needs cuda:{local_rank}, but this machine has {count} CUDA "
                          f"device(s): launch at most {count} processes per node")


def check_devices(device: str, devices: int, num_nodes: int = 1) -> None:
    """`evaluate --devices N --num-nodes M` against `--device` and this machine, before any work."""
    if devices < 1:
        raise LaunchError(f"--devices {devices}: give the number of processes per node, 1 or more")
    if num_nodes < 1:
        raise LaunchError(f"--num-nodes {num_nodes}: give the number of machines, 1 or more")
    dev = torch.device(device)
    if dev.type == "cuda" and devices * num_nodes > 1:
        if dev.index is not None:
            raise LaunchError(f"--device {device} names one GPU, and --devices {devices} asks for {devices}: pass "
                              "--device cuda (process i decodes on cuda:i; choose GPUs with CUDA_VISIBLE_DEVICES)")
        count = torch.cuda.device_count()
        if devices > count:
            raise LaunchError(f"--devices {devices}: this machine has {count} CUDA device(s): pass --devices {count} "
                              "or fewer")
    elif dev.type not in ("cpu", "cuda") and devices * num_nodes > 1:
        raise LaunchError(f"--device {device}: data-parallel runs decode on cpu or cuda")


def check_launch(device: str, devices: int, num_nodes: int = 1, strategy: str = "ddp_spawn") -> None:
    """Everything a data-parallel `evaluate` can check before loading anything: the counts against the
    machine, and a launcher's environment against the counts and the strategy."""
    check_devices(device, devices, num_nodes)
    launch = launch_env()
    if launch is None:
        return
    if launch.world_size != devices * num_nodes:
        raise LaunchError(f"the launcher started WORLD_SIZE={launch.world_size} processes, but --devices {devices} "
                          f"--num-nodes {num_nodes} make {devices * num_nodes}: pass counts that multiply to "
                          f"{launch.world_size}")
    if strategy == "ddp_spawn" and "RANK" in os.environ:
        raise LaunchError("--strategy ddp_spawn starts its own processes, but a launcher (torchrun) already "
                          "started this one: pass --strategy ddp")
    if torch.device(device).type == "cuda":
        check_cuda_rank(launch.local_rank)
