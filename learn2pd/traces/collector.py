"""Run a frozen dLLM over prompts and record, per step and block position, what a filter learns from.

Modes:
- `oracle-replay` (Learn2PD): decode with vanilla (the reference output), then decode again with the
  oracle, which commits exactly the positions already equal to the reference; every step is recorded.
- `reference`: record the steps of the vanilla decode itself; labels are computed against its output
  afterwards (one decode per prompt).

`reference_plan` is `vanilla` (as published) or `vanilla+eotp`: the same one-token-per-step decode that
stops at its predicted end of text, so the EOS padding is not decoded token by token (on the tiny model
that is most of a 128-token answer). The replay then uses `oracle+eotp`, which cuts only where the
reference ends.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from learn2pd import __version__
from learn2pd.atomic import check_output
from learn2pd.configfile import OVERWRITE_FLAG, option
from learn2pd.decoding.batching import StepProgress, decode_batch, encode_prompts, length_batches
from learn2pd.decoding.config import DecodeConfig
from learn2pd.filters.features import logit_features
from learn2pd.traces import store

MODES = ("oracle-replay", "reference")
REFERENCE_PLANS = ("vanilla", "vanilla+eotp")


@dataclass
class CollectConfig:
    out: str = option("outputs/traces/tiny", "output folder (shards, run.json, the merged dataset in OUT/traces)")
    model: str | None = option(None, "checkpoint folder or hub id; null: the embedded tiny dLLM")
    tasks: str = option("train:suite", "prompts: train:FAMILIES (never held out), a .jsonl file or a hub dataset")
    num_prompts: int = option(2000, "prompts to record")
    mode: str = option("oracle-replay", f"one of {', '.join(MODES)}")
    reference_plan: str = option("vanilla", f"the reference decode: {' or '.join(REFERENCE_PLANS)} (stops at its end)")
    gen_length: int = option(128, "generation region, tokens")
    block_length: int = option(32, "semi-autoregressive block, tokens")
    steps: int | None = option(None, "total steps of the vanilla reference; null: one token per step")
    cache: str = option("none", "KV cache of the decodes: none, prefix or dual")
    num_fewshot: int = option(0, "solved training problems of the same family before each question")
    batch_size: int = option(64, "prompts per decode batch")
    devices: int = option(1, "processes to shard prompts over (Lightning Fabric)")
    dtype: str = option("float32", "float32, bfloat16 or auto (bf16 where the CPU/GPU has bf16 units)")
    device: str = option("cpu", "cpu, cuda, cuda:N")
    seed: int = option(0, "decode seed (recorded)")
    question_field: str = option("question", "question field of a .jsonl file or hub dataset")
    answer_field: str = option("answer", "answer field of a .jsonl file or hub dataset")
    split: str = option("train", "hub dataset split")
    overwrite: bool = option(False, "needed to write into checkpoints/ (the shipped models and filters)")
    wandb: bool = option(True, "log the collection's counts to W&B under OUT/logs (offline unless logged in)")

    def decode_config(self) -> DecodeConfig:
        return DecodeConfig(gen_length=self.gen_length, block_length=self.block_length, steps=self.steps,
                            seed=self.seed, cache=self.cache)

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown trace mode {self.mode!r}: choose from {', '.join(MODES)}")
        if self.reference_plan not in REFERENCE_PLANS:
            raise ValueError(f"reference_plan {self.reference_plan!r}: traces need a vanilla reference, choose "
                             f"from {', '.join(REFERENCE_PLANS)}")
        if self.devices < 1 or self.batch_size < 1:
            raise ValueError("devices and batch_size must be >= 1")
        self.decode_config().validate()


class StepRecorder:
    """Engine observer: turns each step's state into rows of the `steps` table (vectorised per step)."""

    def __init__(self, prompt_ids: list[int], block_length: int):
        self.prompt_ids, self.blk = prompt_ids, block_length
        self.columns: dict[str, list] = {k: [] for k in ("prompt_id", "block", "step", "block_start", "length",
                                                         "confidence", "margin", "entropy", "token", "masked",
                                                         "committed", "label", "_row")}

    @torch.no_grad()
    def __call__(self, state, commit):
        win = state.block_window(self.blk)
        valid = win.valid
        # the model's own predictions (a policy never rewrites the state): label = prediction == reference
        label = win.take(state.tokens == state.reference) if state.reference is not None else valid & False
        feats = logit_features(state.logits.at(win.idx))
        cols = {
            "confidence": win.take(state.confidence).float() * valid,
            "margin": feats["margin"] * valid,
            "entropy": feats["entropy"] * valid,
            "token": win.take(state.tokens) * valid,
            "masked": win.take(state.masked) & valid,
            "committed": win.take(commit) & valid,
            "label": label & valid,
        }
        c = self.columns
        rows = state.rows.tolist()
        c["_row"] += rows
        c["prompt_id"] += [self.prompt_ids[r] for r in rows]
        c["block"] += (win.start // self.blk).tolist()
        c["step"] += state.step_in_block.tolist()
        c["block_start"] += win.start.tolist()
        c["length"] += win.size.tolist()
        for k, v in cols.items():
            c[k] += v.tolist()

    def relabel(self, references: torch.Tensor) -> None:
        """Reference mode: label = the step's argmax equals the final output at that position."""
        c, ar = self.columns, torch.arange(self.blk)
        if not c["_row"]:
            return
        # Padded by a block, so a short last block's trailing columns index padding, not past the end.
        ref = torch.nn.functional.pad(references.cpu(), (0, self.blk), value=-1)
        final = ref[torch.tensor(c["_row"])[:, None], torch.tensor(c["block_start"])[:, None] + ar]
        c["label"] = ((ar < torch.tensor(c["length"])[:, None]) & (torch.tensor(c["token"]) == final)).tolist()

    def table(self) -> dict:
        return {k: v for k, v in self.columns.items() if not k.startswith("_")}


def _config_hash(model) -> str:
    return hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:16]


@torch.no_grad()
def weights_hash(model) -> str:
    """A fingerprint of the weights (per-tensor sums, not the bytes: cheap even for an 8B model)."""
    stats = [torch.stack([p.float().sum(), p.float().abs().sum()]).cpu() for p in model.parameters()]
    return hashlib.sha256(torch.cat(stats).double().numpy().round(6).tobytes()).hexdigest()[:16]


def _run_identity(cfg: CollectConfig, model, dcfg: DecodeConfig) -> dict:
    """Everything that decides which prompts land in which shard and what is recorded for them. Not
    num_prompts: prompt streams and batches are prefix-stable, so a rerun with more prompts extends."""
    return {"model": str(cfg.model or "checkpoints/tiny-llada"), "model_config_hash": _config_hash(model),
            "weights": weights_hash(model), "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
            "tasks": cfg.tasks, "num_fewshot": cfg.num_fewshot, "question_field": cfg.question_field,
            "answer_field": cfg.answer_field, "split": cfg.split, "mode": cfg.mode,
            "reference_plan": cfg.reference_plan, "decoding": dataclasses.asdict(dcfg),
            "batch_size": cfg.batch_size, "devices": cfg.devices}


def _prepare(cfg: CollectConfig):
    from learn2pd.models.loading import load_model
    from learn2pd.tasks.fewshot import with_fewshot
    from learn2pd.tasks.loaders import load_problems

    problems = load_problems(cfg.tasks, cfg.num_prompts, cfg.question_field, cfg.answer_field, cfg.split,
                             count_flag="--num-prompts")
    problems = with_fewshot(problems, cfg.num_fewshot, cfg.seed)
    model, tok, spec = load_model(cfg.model, cfg.dtype, cfg.device)
    return problems, model, tok, spec


def _collect_rank(cfg: CollectConfig, rank: int, world: int, progress: bool, prepared=None) -> None:
    problems, model, tok, spec = prepared or _prepare(cfg)  # a spawned rank loads its own copy
    out, dcfg = Path(cfg.out), cfg.decode_config()
    encoded = encode_prompts(tok, [p.prompt for p in problems])
    valid = [i for i in range(len(problems)) if _skip_reason(problems[i].prompt, encoded[i], dcfg, spec) is None]
    mine = valid[rank::world]
    # Stored prompts are skipped and the rest batched by length; rows decode independently of their batch
    # (tested), so a resumed run records what an uninterrupted one would.
    done = store.done_prompt_ids(out)
    todo = [i for i in mine if i not in done]
    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc=f"traces[{rank}]", unit="prompt",
               disable=not progress)
    replay = "oracle+eotp" if cfg.reference_plan.endswith("+eotp") else "oracle"
    step = StepProgress(bar) if progress else None  # the bar moves within a batch too
    for group in length_batches([len(encoded[i]) for i in todo], cfg.batch_size):
        batch = [todo[j] for j in group]
        rows = [encoded[i] for i in batch]
        recorder = StepRecorder(batch, dcfg.block_length)
        if cfg.mode == "reference":
            ref = decode_batch(model, tok, spec, rows, cfg.reference_plan, dcfg, observer=recorder, on_step=step)
            recorder.relabel(ref.sequences)
        else:
            ref = decode_batch(model, tok, spec, rows, cfg.reference_plan, dcfg, on_step=step)
            decode_batch(model, tok, spec, rows, replay, dcfg, reference=ref.sequences, observer=recorder, on_step=step)
        seqs = {k: [] for k in ("prompt_id", "prompt", "family", "prompt_ids", "reference", "end_position", "nfe",
                                "correct")}
        for row, i in enumerate(batch):
            toks = ref.sequences[row].tolist()
            end = next((j for j, t in enumerate(toks) if t in spec.end_ids), -1)
            for k, v in (("prompt_id", i), ("prompt", problems[i].prompt), ("family", problems[i].family),
                         ("prompt_ids", encoded[i]), ("reference", toks), ("end_position", end),
                         ("nfe", int(ref.nfe[row])), ("correct", problems[i].grade(ref.texts[row]))):
                seqs[k].append(v)
        store.write_shard(out, rank, recorder.table(), seqs)
        bar.update(len(batch))
    bar.close()


def _skip_reason(question: str, encoded: list[int], dcfg: DecodeConfig, spec) -> str | None:
    if not question.strip():
        return "empty prompt"
    if spec.context_length and len(encoded) + dcfg.gen_length > spec.context_length:
        return f"prompt of {len(encoded)} tokens + gen_length {dcfg.gen_length} exceeds context {spec.context_length}"
    return None


def _fabric_worker(fabric, cfg: CollectConfig, progress: bool) -> None:
    torch.set_num_threads(1)
    _collect_rank(cfg, fabric.global_rank, fabric.world_size, progress and fabric.global_rank == 0)


def collect_traces(cfg: CollectConfig, progress: bool = True) -> Path:
    """Collect traces into `cfg.out` (resumable); returns the merged dataset folder `cfg.out/traces`."""
    cfg.validate()
    out = check_output(cfg.out, "out", folder=True, overwrite=cfg.overwrite, overwrite_flag=OVERWRITE_FLAG)
    prepared = _prepare(cfg)  # fail early on a bad model, task file or column, before `out` is created
    problems, model, tok, spec = prepared
    dcfg = cfg.decode_config()
    identity = _run_identity(cfg, model, dcfg)
    store.claim(out, identity)
    skipped = []
    for i, p in enumerate(problems):
        reason = _skip_reason(p.prompt, encode_prompts(tok, [p.prompt])[0], dcfg, spec)
        if reason:
            skipped.append({"prompt_id": i, "prompt": p.prompt, "reason": reason})
    from learn2pd.evaluation.report import write_atomic

    write_atomic(out / "skipped.jsonl", "".join(json.dumps(s) + "\n" for s in skipped))
    start = time.perf_counter()
    if cfg.devices > 1:
        from lightning.fabric import Fabric

        accelerator = "cpu" if cfg.device == "cpu" else "auto"
        fabric = Fabric(accelerator=accelerator, devices=cfg.devices, strategy="ddp_spawn")
        fabric.launch(_fabric_worker, cfg, progress)
    else:
        _collect_rank(cfg, 0, 1, progress, prepared)
    metadata = {
        **identity, "learn2pd_version": __version__, "model_type": model.config.model_type,
        "tokenizer": tok.name_or_path, "mask_id": spec.mask_id, "end_ids": list(spec.end_ids),
        "num_prompts": len(problems), "skipped": len(skipped), "seed": cfg.seed,
        "collect_seconds_last_run": round(time.perf_counter() - start, 2),
    }
    merged = store.merge(out, metadata)
    if cfg.wandb:
        from learn2pd import tracking

        tracking.log_trace_counts(merged, dataclasses.asdict(cfg), out / "logs")
    return merged
