"""Train an unmasking policy by reinforcement learning (GRPO), the frozen dLLM as the environment.

    train-policy --config configs/policy/tiny.yaml [--key value ...] [--verbose]

Each iteration takes the next `prompts` problems of the built-in suite's training stream, decodes each
`group_size` times with the policy sampling its commits, rewards a rollout with
1[correct] * ((L - min(NFE, L) + 1) / L) ** alpha, and takes `ppo_epochs` clipped-ratio steps on the
advantages (reward minus the prompt's group mean; no KL term). A checkpoint every `checkpoint_every`
iterations makes a killed run resumable with the same final weights. At the end the threshold is chosen
on validation problems (the training stream after the last training prompt, never a held-out one) and
the policy is exported as config.json + model.safetensors.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch

from learn2pd.atomic import check_output, write_atomic
from learn2pd.configfile import OVERWRITE_FLAG, config_from_args, option
from learn2pd.decoding.batching import decode_all, encode_prompts
from learn2pd.decoding.config import DecodeConfig
from learn2pd.decoding.plan import DecodingPlan
from learn2pd.decoding.policies.rl import RLPolicy
from learn2pd.errors import run_command
from learn2pd.rl.grpo import rollout_reward
from learn2pd.rl.net import PolicyConfig, UnmaskingPolicyNet
from learn2pd.rl.rollout import collect_rollouts, grpo_update
from learn2pd.tasks.loaders import load_problems
from learn2pd.verbosity import lightning_trainer, quiet_argv

CURVE_COLUMNS = ("iteration", "reward", "accuracy", "nfe", "entropy", "loss", "clip_share", "cpu_s", "wall_s")
# Settings a resumed run must share with the checkpoint (others, e.g. iterations, may change).
RUN_IDENTITY = ("model", "tasks", "gen_length", "block_length", "cache", "eotp", "prompts", "group_size", "alpha",
                "clip", "ppo_epochs", "lr", "weight_decay", "max_grad_norm", "policy", "seed", "dtype")


@dataclass
class TrainPolicyConfig:
    out: str = option("outputs/policies/tiny-llada-rl-policy", "export folder (config.json + model.safetensors)")
    model: str | None = option(None, "the frozen dLLM: checkpoint folder or hub id; null: the embedded tiny dLLM")
    tasks: str = option("train:suite", "training prompts: train:FAMILIES of the built-in suite (never held out)")
    gen_length: int = option(256, "generation region, tokens (L of the reward)")
    block_length: int = option(256, "semi-autoregressive block; gen_length is full diffusion")
    cache: str = option("none", "KV cache of the rollouts: none, prefix or dual")
    eotp: bool = option(True, "decode with End-of-Text Prediction (+eotp) in rollouts and calibration")
    iterations: int = option(100, "GRPO iterations: rollouts, then ppo_epochs gradient steps on them")
    prompts: int = option(5, "training prompts per iteration (P)")
    group_size: int = option(8, "rollouts per prompt (G); advantage = reward - the group's mean")
    alpha: float = option(4.0, "reward = 1[correct] * ((L - min(NFE, L) + 1) / L) ** alpha")
    clip: float = option(0.5, "PPO clip: ratios outside [1 - clip, 1 + clip] give no gradient")
    ppo_epochs: int = option(2, "gradient steps on each iteration's rollouts")
    lr: float = option(1e-3, "AdamW learning rate")
    weight_decay: float = option(0.0, "AdamW weight decay")
    max_grad_norm: float = option(1.0, "gradient norm clip")
    policy: dict = option(help="network settings: width, heads, ffn, layers, init_center, init_scale",
                          factory=dict)
    checkpoint_every: int = option(5, "resumable checkpoint every N iterations (and after the last)")
    resume: bool = option(True, "continue from log_dir/last.ckpt when it exists")
    val_prompts: int = option(64, "validation problems for the threshold (training stream, after the last "
                              "training prompt)")
    thresholds: list = option(help="thresholds tried on validation; the best mean reward is exported",
                              factory=lambda: [0.3, 0.5, 0.7, 0.9])
    accuracy_slack: float | None = option(None, "instead of the best reward: the fewest forwards among the "
                                          "thresholds within this many accuracy points of the best one")
    batch_size: int = option(64, "rollouts decoded together")
    dtype: str = option("float32", "dtype of the frozen dLLM: float32, bfloat16 or auto")
    seed: int = option(0, "initialisation and sampling seed")
    wandb: bool = option(True, "log to Weights & Biases (offline unless logged in)")
    wandb_project: str = option("learn2pd", "W&B project")
    log_dir: str = option("runs/policy", "checkpoints, curve.csv, curve.png and the W&B offline run")
    overwrite: bool = option(False, "needed to write into checkpoints/ (the shipped policy)")

    def validate(self) -> None:
        if not self.tasks.startswith("train:"):
            raise ValueError(f"tasks {self.tasks!r}: a policy trains on the training stream only, e.g. train:suite "
                             "(held-out problems are for evaluation)")
        for name in ("iterations", "prompts", "group_size", "ppo_epochs", "checkpoint_every", "val_prompts",
                     "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.group_size < 2:
            raise ValueError("group_size must be >= 2: the advantage compares rollouts of the same prompt")
        if not 0 < self.clip < 1:
            raise ValueError(f"clip must be in (0, 1), got {self.clip}")
        if not self.thresholds or not all(isinstance(t, (int, float)) and 0 <= t <= 1 for t in self.thresholds):
            raise ValueError(f"thresholds must be numbers in [0, 1], got {self.thresholds}")
        PolicyConfig(**self.policy)  # names and values of the network settings
        self.decode_config().validate()

    def decode_config(self) -> DecodeConfig:
        return DecodeConfig(gen_length=self.gen_length, block_length=self.block_length, seed=self.seed,
                            cache=self.cache)


class Environment:
    """The frozen dLLM and the problems; a plain object, so the dLLM never lands in a checkpoint."""

    def __init__(self, cfg: TrainPolicyConfig):
        from learn2pd.models.loading import load_model

        self.model, self.tokenizer, self.spec = load_model(cfg.model, cfg.dtype, "cpu")
        for p in self.model.parameters():
            p.requires_grad_(False)
        # training prompts first, validation after them: never the same problem, never a held-out one
        pool = load_problems(cfg.tasks, cfg.iterations * cfg.prompts + cfg.val_prompts, count_flag="prompts")
        self.train, self.val = pool[:cfg.iterations * cfg.prompts], pool[cfg.iterations * cfg.prompts:]


class PolicyModule(L.LightningModule):
    """One training step is one GRPO iteration (rollouts + updates); one epoch holds one step, so the
    iteration is the epoch and a checkpoint at an epoch's end resumes at the next iteration."""

    def __init__(self, cfg: dict, policy: dict):
        super().__init__()
        self.save_hyperparameters()
        self.cfg = TrainPolicyConfig(**cfg)
        self.net = UnmaskingPolicyNet(PolicyConfig(**policy))
        self.automatic_optimization = False
        self.env: Environment | None = None
        self.curve: list[dict] = []  # one row per iteration; saved in checkpoints, so a resumed run keeps it
        self.time = {"cpu_s": 0.0, "wall_s": 0.0}

    def configure_optimizers(self):
        return torch.optim.AdamW(self.net.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    def training_step(self, batch, _):
        cfg, it = self.cfg, self.current_epoch
        cpu, wall = time.process_time(), time.perf_counter()
        problems = self.env.train[it * cfg.prompts:(it + 1) * cfg.prompts]
        # Every draw of an iteration comes from a generator seeded by (seed, iteration): a resumed run
        # samples exactly what the uninterrupted one did.
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + it)
        policy = RLPolicy(self.net)
        ro = collect_rollouts(self.env.model, self.env.tokenizer, self.env.spec, policy, problems, cfg.group_size,
                              cfg.decode_config(), cfg.eotp, generator, cfg.batch_size)
        rewards = ro.rewards(cfg.gen_length, cfg.alpha)
        stats = grpo_update(self.net, self.optimizers(), ro, rewards, cfg.group_size, cfg.clip, cfg.ppo_epochs,
                            cfg.max_grad_norm, backward=self.manual_backward)
        self.time["cpu_s"] += time.process_time() - cpu
        self.time["wall_s"] += time.perf_counter() - wall
        row = {"iteration": it + 1, "reward": float(rewards.mean()),
               "accuracy": 100.0 * float(ro.correct.float().mean()), "nfe": float(ro.nfe.float().mean()),
               "entropy": stats["entropy"], "loss": stats["loss"], "clip_share": stats["clip_share"],
               **{k: round(v, 2) for k, v in self.time.items()}}
        self.curve.append(row)
        self.log_dict({f"train/{k}": float(v) for k, v in row.items() if k != "iteration"}, on_step=True,
                      on_epoch=False, prog_bar=False)
        write_curve(self.curve, Path(cfg.log_dir) / "curve.csv")

    def on_save_checkpoint(self, checkpoint):
        checkpoint["curve"], checkpoint["time"] = self.curve, self.time
        # Rollouts and updates draw from per-iteration generators; the global states are kept for anything
        # else (as tensors and tuples: Lightning loads checkpoints with weights_only).
        checkpoint["rng"] = {"torch": torch.get_rng_state(), "python": random.getstate(),
                             "numpy": _numpy_state()}

    def on_load_checkpoint(self, checkpoint):
        self.curve, self.time = checkpoint["curve"], checkpoint["time"]
        torch.set_rng_state(checkpoint["rng"]["torch"])
        kind, keys, pos, has_gauss, gauss = checkpoint["rng"]["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate(checkpoint["rng"]["python"])


def _numpy_state() -> tuple:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)


class Iterations(L.LightningDataModule):
    """One dummy batch per epoch: the module draws its own prompts by iteration number."""

    def train_dataloader(self):
        return torch.utils.data.DataLoader([0], batch_size=1)


class AtomicCheckpoint(L.Callback):
    """`last.ckpt` every N iterations and after the last, written to a temp name and renamed: a kill while
    saving leaves the previous checkpoint whole."""

    def __init__(self, path: Path, every: int):
        self.path, self.every = path, every

    def on_train_epoch_end(self, trainer, module):
        done = trainer.current_epoch + 1
        if done % self.every == 0 or done == trainer.max_epochs:
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            trainer.save_checkpoint(tmp)
            os.replace(tmp, self.path)


def write_curve(rows: list[dict], path: Path) -> Path:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CURVE_COLUMNS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return write_atomic(path, buf.getvalue())


def plot_curve(rows: list[dict], path: Path, title: str = "") -> Path:
    """Mean reward and accuracy (left) and mean NFE (right) per iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    it = [r["iteration"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
    ax1.plot(it, [r["reward"] for r in rows], label="mean reward")
    ax1.plot(it, [r["accuracy"] / 100 for r in rows], label="accuracy (share)", alpha=0.6)
    ax1.set_xlabel("iteration")
    ax1.set_ylim(0, 1.05)
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    ax2.plot(it, [r["nfe"] for r in rows], color="tab:red")
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("mean NFE per rollout")
    ax2.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return write_atomic(path, buf.getvalue())


@torch.no_grad()
def calibrate_threshold(net, env: Environment, cfg: TrainPolicyConfig) -> tuple[float, list[dict]]:
    """Decode the validation problems deterministically at each threshold; the best mean reward wins (a tie
    goes to the higher threshold, the more careful one), or with `accuracy_slack` the fewest forwards
    within that many points of the best accuracy."""
    encoded = encode_prompts(env.tokenizer, [p.prompt for p in env.val])
    rows = []
    for t in sorted(cfg.thresholds):
        out = decode_all(env.model, env.tokenizer, env.spec, encoded, DecodingPlan(RLPolicy(net, t), eotp=cfg.eotp),
                         cfg.decode_config(), cfg.batch_size)
        correct = torch.tensor([p.grade(text) for p, text in zip(env.val, out.texts)])
        reward = rollout_reward(correct, out.nfe, cfg.gen_length, cfg.alpha)
        rows.append({"threshold": float(t), "reward": float(reward.mean()),
                     "accuracy": 100.0 * float(correct.float().mean()), "nfe": float(out.nfe.float().mean())})
    return choose_threshold(rows, cfg.accuracy_slack), rows


def slack_note(cfg: TrainPolicyConfig) -> str | None:
    """A line for a slack below one validation problem's worth of accuracy: then only the single most
    accurate threshold qualifies, however many forwards it takes."""
    one = 100.0 / cfg.val_prompts
    if cfg.accuracy_slack is not None and cfg.accuracy_slack < one:
        return (f"train-policy: note: accuracy_slack {cfg.accuracy_slack:g} is less than one of {cfg.val_prompts} "
                f"validation problems ({one:.2f} points): the most accurate threshold is exported whatever its "
                "forwards")
    return None


def choose_threshold(rows: list[dict], accuracy_slack: float | None = None) -> float:
    """rows: threshold, reward, accuracy, nfe on validation -> the threshold to export."""
    if accuracy_slack is None:
        return max(rows, key=lambda r: (round(r["reward"], 9), r["threshold"]))["threshold"]
    top = max(r["accuracy"] for r in rows)
    near = [r for r in rows if r["accuracy"] >= top - accuracy_slack]
    return min(near, key=lambda r: (r["nfe"], -r["threshold"]))["threshold"]


def _check_resume(ckpt: Path, cfg: TrainPolicyConfig) -> None:
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    saved, now = state["hyper_parameters"]["cfg"], dataclasses.asdict(cfg)
    diff = [k for k in RUN_IDENTITY if saved.get(k) != now[k]]
    if diff:
        raise ValueError(f"{ckpt} was written by a run with other settings ({', '.join(diff)}): pass the same "
                         "settings, another log_dir, or --resume false to start over")
    if state["epoch"] + 1 > cfg.iterations:
        raise ValueError(f"{ckpt} is past iteration {cfg.iterations}: raise --iterations or start over")


def train_policy(cfg: TrainPolicyConfig, progress: bool = True, callbacks=()) -> dict:
    """Train (or resume), calibrate the threshold on validation, export to `cfg.out`; returns the training
    summary stored in the exported config.json."""
    cfg.validate()
    if note := slack_note(cfg):
        print(note, file=sys.stderr)
    check_output(cfg.out, "out", folder=True, overwrite=cfg.overwrite, overwrite_flag=OVERWRITE_FLAG)
    check_output(cfg.log_dir, "log_dir", folder=True, overwrite=cfg.overwrite, overwrite_flag=OVERWRITE_FLAG)
    log_dir = Path(cfg.log_dir)
    ckpt = log_dir / "last.ckpt"
    resume = cfg.resume and ckpt.is_file()
    if resume:
        _check_resume(ckpt, cfg)
    elif ckpt.is_file():
        ckpt.unlink()
    L.seed_everything(cfg.seed, verbose=False)
    env = Environment(cfg)
    module = PolicyModule(dataclasses.asdict(cfg), cfg.policy | {"model_type": env.spec.family})
    module.env = env
    loggers = [L.pytorch.loggers.CSVLogger(cfg.log_dir, name="lightning")]
    if cfg.wandb:
        from learn2pd import tracking

        loggers.append(tracking.lightning_logger(cfg.log_dir, f"policy-{Path(cfg.out).name}", cfg.wandb_project,
                                                 config=dataclasses.asdict(cfg)))
    trainer = lightning_trainer(max_epochs=cfg.iterations, accelerator="cpu", logger=loggers,
                                callbacks=[AtomicCheckpoint(ckpt, cfg.checkpoint_every), *callbacks],
                                enable_checkpointing=False, enable_progress_bar=progress, enable_model_summary=False,
                                log_every_n_steps=1, deterministic=True, num_sanity_val_steps=0)
    trainer.fit(module, Iterations(), ckpt_path=str(ckpt) if resume else None)
    write_curve(module.curve, log_dir / "curve.csv")  # a resumed run's rows are the checkpoint's
    net = module.net.eval()
    threshold, table = calibrate_threshold(net, env, cfg)
    net.config.threshold = threshold
    net.config.training = {"threshold": threshold, "tasks": cfg.tasks, "iterations": cfg.iterations,
                           "prompts": cfg.prompts, "group_size": cfg.group_size, "gen_length": cfg.gen_length,
                           "block_length": cfg.block_length, "eotp": cfg.eotp, "alpha": cfg.alpha, "lr": cfg.lr,
                           "accuracy_slack": cfg.accuracy_slack,
                           "seed": cfg.seed, "cpu_minutes": round(module.time["cpu_s"] / 60, 1),
                           "wall_minutes": round(module.time["wall_s"] / 60, 1), "validation": table,
                           "last_iteration": module.curve[-1] if module.curve else None}
    net.save_pretrained(cfg.out)
    plot_curve(module.curve, log_dir / "curve.png",
               f"train-policy {cfg.tasks}, gen {cfg.gen_length}, block {cfg.block_length}, alpha {cfg.alpha}")
    for lg in loggers:
        lg.finalize("success")
    if cfg.wandb:
        import wandb

        wandb.finish()
    return net.config.training


def build_config(argv=None) -> TrainPolicyConfig:
    return config_from_args(TrainPolicyConfig, argv, "train-policy", __doc__.splitlines()[1],
                            "configs/policy/tiny.yaml")


def main(argv=None) -> int:
    argv = quiet_argv(sys.argv[1:] if argv is None else argv)  # --verbose: the libraries' own output

    def command() -> int:
        cfg = build_config(argv)
        summary = train_policy(cfg)
        print(f"exported {cfg.out} (threshold {summary['threshold']}): {summary['cpu_minutes']} CPU minutes; "
              "validation " + "; ".join(f"t={r['threshold']}: reward {r['reward']:.3f}, acc {r['accuracy']:.1f}%, "
                                        f"NFE {r['nfe']:.2f}" for r in summary["validation"]))
        return 0

    return run_command("train-policy", command, resumes=True)  # a killed run resumes from its last.ckpt


if __name__ == "__main__":
    sys.exit(main())
