"""Run a frozen dLLM over prompts and record, per step and block position, what a filter learns from.

Modes:
- `oracle-replay` (Learn2PD): decode with vanilla (the reference output), then decode again with the
  oracle, which commits exactly the positions already equal to the reference; every step is recorded.
- `reference`: record the steps of the vanilla decode itself; labels are computed against its output
  afterwards (one decode per prompt).
- `on-policy`: decode with vanilla (the reference), then record the states another plan visits (`plan`:
  a threshold, or a learned filter for a DAgger round), its own parallel commits right and wrong
  included; each prediction is labelled against the reference. Oracle replays never make a mistake, so
  a filter trained on them alone never sees the states its own false accepts create.

`reference_plan` is `vanilla` (as published) or `vanilla+eotp`: the same one-token-per-step decode that
stops at its predicted end of text, so the EOS padding is not decoded token by token (on the tiny model
that is most of a 128-token answer). The replay then uses `oracle+eotp`, which cuts only where the
reference ends.
`answer` (built-in problems only, modes on-policy and oracle-replay) takes the problem's expected output,
then end tokens, as the reference: no reference decode at all, which is 90% of a collection's forwards
(labels say "equals the correct token" rather than "equals vanilla's token": the same where vanilla is
right, and the embedded models' vanilla is right on 99-100% of problems).
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
from learn2pd.configfile import OVERWRITE_FLAG, check_fields, option
from learn2pd.decoding.batching import StepProgress, decode_batch, encode_prompts, length_batches
from learn2pd.decoding.config import CACHES, DecodeConfig
from learn2pd.filters.features import logit_features
from learn2pd.models.loading import DTYPE_NAMES
from learn2pd.traces import store

MODES = ("oracle-replay", "reference", "on-policy")
REFERENCE_PLANS = ("vanilla", "vanilla+eotp", "answer")
ANSWER_SOURCES = ("train:", "val:")  # task sources whose answers are the whole expected output


@dataclass
class CollectConfig:
    out: str = option("outputs/traces/tiny", "output folder (shards, run.json, the merged dataset in OUT/traces)")
    model: str | None = option(None, "checkpoint folder or hub id; null: the embedded tiny dLLM")
    tasks: str = option("train:suite", "prompts: train:FAMILIES (never held out), a .jsonl file or a hub dataset")
    # The defaults are configs/collect/tiny.yaml's: the embedded model's collection as the README runs it.
    num_prompts: int = option(1000, "prompts to record", gt=0)
    mode: str = option("oracle-replay", f"one of {', '.join(MODES)}", choices=MODES)
    reference_plan: str = option("vanilla+eotp", "the reference: vanilla (the published choice), vanilla+eotp "
                                 "(stops at its predicted end, not one forward per padding position), or answer "
                                 "(the built-in problem's expected output then end tokens: no reference decode)",
                                 choices=REFERENCE_PLANS)
    plan: str | None = option(None, "on-policy: the plan whose states are recorded, e.g. threshold:tau=0.7+eotp "
                              "or learned:path=FILTER+eotp (a DAgger round)")
    references: str | None = option(None, "on-policy: reuse the reference decodes stored in this earlier "
                                    "collection (same model, prompts and decoding) instead of decoding them again")
    gen_length: int = option(256, "generation region, tokens (256: the long families' region)", gt=0)
    block_length: int = option(32, "semi-autoregressive block, tokens", gt=0)
    steps: int | None = option(None, "total steps of the vanilla reference; null: one token per step", gt=0)
    cache: str = option("none", "KV cache of the decodes: none, prefix or dual", choices=CACHES)
    num_fewshot: int = option(0, "solved training problems of the same family before each question", ge=0)
    batch_size: int = option(64, "prompts per decode batch", gt=0)
    devices: int = option(1, "processes to shard prompts over (Lightning Fabric)", gt=0)
    dtype: str = option("auto", "float32, bfloat16 or auto (bf16 where the CPU/GPU has bf16 units)",
                        choices=DTYPE_NAMES)
    device: str = option("cpu", "cpu, cuda, cuda:N")
    seed: int = option(0, "decode seed (recorded)")
    question_field: str = option("question", "question field of a .jsonl file or hub dataset")
    answer_field: str = option("answer", "answer field of a .jsonl file or hub dataset")
    split: str = option("train", "hub dataset split")
    overwrite: bool = option(False, "replace an out folder that is not a trace collection, or write into "
                             "checkpoints/ (the shipped models and filters)")
    trust_remote_code: bool = option(False, "run a hub tokenizer's own code (the hub's Dream tokenizer needs it)")
    wandb: bool = option(True, "log the collection's counts to W&B under OUT/logs (offline unless logged in)")

    def __post_init__(self):
        check_fields(self)

    def decode_config(self) -> DecodeConfig:
        return DecodeConfig(gen_length=self.gen_length, block_length=self.block_length, steps=self.steps,
                            seed=self.seed, cache=self.cache)

    def validate(self) -> None:
        # mode, reference_plan, devices and batch_size are checked by their options when the config is built
        if self.reference_plan == "answer" and (self.mode == "reference" or not self.tasks.startswith(ANSWER_SOURCES)):
            raise ValueError("reference_plan answer labels against the built-in problems' expected outputs: it needs "
                             f"tasks train:/val: (got {self.tasks!r}) and mode on-policy or oracle-replay")
        if (self.mode == "on-policy") != (self.plan is not None):
            raise ValueError("mode on-policy needs `plan` (the plan whose states are recorded, e.g. "
                             "threshold:tau=0.7+eotp), and `plan` goes with mode on-policy only")
        if self.references is not None and self.mode != "on-policy":
            raise ValueError("references (reused reference decodes) go with mode on-policy")
        if self.plan is not None:
            from learn2pd.decoding.plan import make_plan

            if make_plan(self.plan).policy.needs_reference:
                raise ValueError(f"plan {self.plan!r}: on-policy traces record a plan that decodes on its own; "
                                 "the oracle's replay is mode oracle-replay")
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
    num_prompts: prompt streams and batches are prefix-stable, so a rerun with more prompts extends.
    `model` None: the settings alone (checked before the model loads)."""
    weights = {} if model is None else {
        "model_config_hash": _config_hash(model), "weights": weights_hash(model),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", "")}
    return {"model": str(cfg.model or "checkpoints/tiny-llada"), **weights,
            "tasks": cfg.tasks, "num_fewshot": cfg.num_fewshot, "question_field": cfg.question_field,
            "answer_field": cfg.answer_field, "split": cfg.split, "mode": cfg.mode,
            "reference_plan": cfg.reference_plan, "plan": cfg.plan, "decoding": dataclasses.asdict(dcfg),
            "batch_size": cfg.batch_size, "devices": cfg.devices}


def _prepare(cfg: CollectConfig):
    from learn2pd.models.loading import load_model, load_tokenizer
    from learn2pd.tasks.fewshot import check_fewshot, with_fewshot
    from learn2pd.tasks.loaders import load_problems
    from learn2pd.tasks.prompting import check_prompts

    problems = load_problems(cfg.tasks, cfg.num_prompts, cfg.question_field, cfg.answer_field, cfg.split,
                             count_flag="--num-prompts")
    check_fewshot(problems, cfg.num_fewshot)
    problems = with_fewshot(problems, cfg.num_fewshot, cfg.seed)
    # the tokenizer alone first: a prompt it cannot read is refused before the weights load (an empty one, or
    # one over the context, is skipped and recorded in skipped.jsonl instead)
    readable = [p for p in problems if p.prompt.strip()]
    check_prompts(load_tokenizer(cfg.model, cfg.trust_remote_code), [p.prompt for p in readable],
                  [p.source for p in readable])
    model, tok, spec = load_model(cfg.model, cfg.dtype, cfg.device, cfg.trust_remote_code)
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
    replay = "oracle+eotp" if cfg.reference_plan.endswith(("+eotp", "answer")) else "oracle"
    stored = _stored_references(cfg, model, problems) if cfg.references else {}
    if cfg.plan is not None:
        from learn2pd.decoding.plan import make_plan

        plan = make_plan(cfg.plan)  # built once: a learned filter loads once
    step = StepProgress(bar) if progress else None  # the bar moves within a batch too
    for group in length_batches([len(encoded[i]) for i in todo], cfg.batch_size):
        batch = [todo[j] for j in group]
        rows = [encoded[i] for i in batch]
        recorder = StepRecorder(batch, dcfg.block_length)
        if cfg.mode == "reference":
            ref = decode_batch(model, tok, spec, rows, cfg.reference_plan, dcfg, observer=recorder, on_step=step)
            recorder.relabel(ref.sequences)
        else:
            if cfg.reference_plan == "answer":
                ref = _AnswerReference([problems[i] for i in batch], tok, spec, dcfg.gen_length)
            elif all(i in stored for i in batch):
                ref = _StoredReference(batch, stored, tok, spec)
            else:
                ref = decode_batch(model, tok, spec, rows, cfg.reference_plan, dcfg, on_step=step)
            # on-policy: the reference only labels, the plan never reads it; oracle-replay: the oracle replays it
            decode_batch(model, tok, spec, rows, plan if cfg.mode == "on-policy" else replay, dcfg,
                         reference=ref.sequences, observer=recorder, on_step=step)
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


class _StoredReference:
    """A batch's reference decode read back from an earlier collection (what `decode_batch` returns)."""

    def __init__(self, batch: list[int], stored: dict, tokenizer, spec):
        from learn2pd.decoding.engine import decode_text

        self.sequences = torch.tensor([stored[i]["reference"] for i in batch])
        self.nfe = torch.tensor([stored[i]["nfe"] for i in batch])
        self.texts = [decode_text(tokenizer, spec, row) for row in self.sequences]


class _AnswerReference:
    """The built-in problems' expected outputs as a reference: the answer's tokens, then end tokens to the
    region's end (what a correct decode of the embedded models holds), with no decode (0 forwards)."""

    def __init__(self, problems, tokenizer, spec, gen_length: int):
        rows = []
        for p in problems:
            ids = tokenizer(p.answer, add_special_tokens=False).input_ids[:gen_length]
            rows.append(ids + [spec.eos_id] * (gen_length - len(ids)))
        self.sequences = torch.tensor(rows)
        self.nfe = torch.zeros(len(rows), dtype=torch.long)
        self.texts = [p.answer for p in problems]


def _stored_references(cfg: CollectConfig, model, problems) -> dict[int, dict]:
    """prompt_id -> reference tokens, forwards and text of an earlier collection, after checking that it
    decoded the same references: the same weights, task stream, few-shot, reference plan and decoding."""
    from learn2pd.traces.store import load_traces, read_metadata

    meta = read_metadata(cfg.references)
    mine = {"weights": weights_hash(model), "tasks": cfg.tasks, "num_fewshot": cfg.num_fewshot,
            "reference_plan": cfg.reference_plan, "decoding": dataclasses.asdict(cfg.decode_config()),
            "question_field": cfg.question_field, "answer_field": cfg.answer_field, "split": cfg.split}
    differ = sorted(k for k in mine if meta.get(k) != mine[k])
    if differ:
        raise ValueError(f"references {cfg.references} were decoded with a different {', '.join(differ)}: "
                         "point references at a collection of this model and these settings, or drop it")
    seqs = load_traces(cfg.references)["sequences"]
    out = {}
    for pid, prompt, ref, nfe in zip(seqs["prompt_id"], seqs["prompt"], seqs["reference"], seqs["nfe"]):
        if pid < len(problems) and problems[pid].prompt == prompt:
            out[pid] = {"reference": ref, "nfe": nfe}
    return out


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
    out = check_output(cfg.out, "out", folder=True, overwrite=cfg.overwrite, overwrite_flag=OVERWRITE_FLAG,
                       owns=store.COLLECTION_FILES, what="a trace collection")
    store.refuse_if_locked(out)  # another run is collecting there: refused before the model loads
    store.check_resume(out, _run_identity(cfg, None, cfg.decode_config()))  # other settings: likewise
    prepared = _prepare(cfg)  # fail early on a bad model, task file or column, before `out` is created
    if cfg.references:
        _stored_references(cfg, prepared[1], prepared[0])  # other settings are refused before `out` is created
    with store.locked(out):  # a second run into `out` refuses, naming this one's pid
        return _collect(cfg, out, prepared, progress)


def _collect(cfg: CollectConfig, out: Path, prepared, progress: bool) -> Path:
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
