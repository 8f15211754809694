"""Train the Learn2PD filter (or a variant) and the End-of-Text predictor on decoding traces.

    train-filter --config configs/filter/tiny.yaml [--key value ...] [--verbose]

The module holds the math (BCE with logits, false accepts optionally weighted up), the data module
holds the traces (split by prompt, 80/10/10), the best epoch by validation loss is exported.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics.functional.classification import binary_auroc

from learn2pd.atomic import check_output
from learn2pd.configfile import OVERWRITE_FLAG, build, check_fields, config_from_args, option
from learn2pd.errors import run_command
from learn2pd.filters.compare import threshold_at_false_accept_rate
from learn2pd.filters.data import split_prompts, trace_tensors
from learn2pd.filters.hub import check_repo_id, push_filter, write_model_card
from learn2pd.filters.models import FILTER_FILES, FilterConfig, build_filter, serves_any_block
from learn2pd.traces.store import load_traces, read_metadata
from learn2pd.verbosity import lightning_trainer, quiet_argv

TARGETS = ("filter", "eot")


@dataclass
class TrainFilterConfig:
    traces: str | list[str] = option("outputs/traces/tiny", "a collect-traces output folder, or a list of them "
                                     "(DAgger rounds, block lengths) of one model and one task stream")
    families: list[str] | None = option(None, "train on these task families' prompts only (e.g. [arith, sort, rev, "
                                        "table]: a filter that never saw chain); null: every prompt")
    out: str = option("outputs/filters/tiny-llada-filter", "export folder (config.json + model.safetensors)")
    filter: dict = option(help="filter kind and settings, e.g. {kind: positionwise}",
                          factory=lambda: {"kind": "learn2pd"})
    target: str = option("filter", "filter (is this prediction final?) or eot (does the answer end here?)",
                         choices=TARGETS)
    lr: float = option(3e-3, "AdamW learning rate", gt=0)
    weight_decay: float = option(0.0, "AdamW weight decay", ge=0)
    epochs: int = option(40, "epochs; the best one by validation loss is exported", gt=0)
    # a few thousand step rows: at 4096 an epoch was one optimizer step (AUROC 0.68)
    batch_size: int = option(64, "step rows per optimizer step", gt=0)
    false_accept_weight: float = option(1.0, ">1 penalises accepting a wrong token more than rejecting a right one",
                                        gt=0)
    calibrate_false_accept: float | None = option(
        None, "set the exported threshold on validation: the lowest whose false-accept rate stays within "
        "this budget; null keeps filter.threshold (Learn2PD's 0.96)", ge=0, le=1)
    seed: int = option(0, "split and initialisation seed")
    wandb: bool = option(True, "log to Weights & Biases (offline unless logged in)")
    wandb_project: str = option("learn2pd", "W&B project")
    log_dir: str = option("runs/filter", "CSV logs and the W&B offline run")
    overwrite: bool = option(False, "replace an out folder that is not a filter, or write into checkpoints/ "
                             "(the shipped filters)")
    push_to_hub: str | None = option(None, "ORG/NAME: upload the exported filter and its model card to the "
                                     "Hugging Face Hub (log in first: huggingface-cli login)")

    def __post_init__(self):
        check_fields(self)
        self.filter_config()  # a wrong filter key or value is refused before the traces are read

    def filter_config(self) -> FilterConfig:
        return build(FilterConfig, ({"kind": "eot"} if self.target == "eot" else {}) | self.filter, "filter")


def _concat_padded(parts: list[dict]) -> dict:
    """Rows of several trace folders in one set; blocks of different lengths are zero-padded to the
    widest, the padding out of the loss (as a short last block's padding already is)."""
    width = max(p["features"].shape[1] for p in parts)

    def pad(t):
        return F.pad(t, (0, 0, 0, width - t.shape[1]) if t.dim() == 3 else (0, width - t.shape[1]))

    keys = ("features", "label", "eot_label", "loss_mask")
    out = {k: torch.cat([pad(p[k]) for p in parts]) for k in keys}
    out["prompt_id"] = torch.cat([p["prompt_id"] for p in parts])
    return out


def _metrics(logits, labels, threshold) -> dict:
    prob = torch.sigmoid(logits)
    pred = prob > threshold
    tp = (pred & labels).sum().item()
    fp = (pred & ~labels).sum().item()
    fn = (~pred & labels).sum().item()
    tn = (~pred & ~labels).sum().item()
    auroc = binary_auroc(prob, labels.long()).item() if 0 < labels.sum() < len(labels) else float("nan")
    return {"auroc": auroc, "precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1),
            "false_accept_rate": fp / max(fp + tn, 1)}


class FilterDataModule(L.LightningDataModule):
    def __init__(self, traces: str | list[str], features: list[str], block_length: int, target: str,
                 batch_size: int, seed: int, any_block: bool = False, families: list[str] | None = None):
        super().__init__()
        self.families = families
        self.path, self.features, self.block_length, self.any_block = traces, features, block_length, any_block
        self.target, self.batch_size, self.seed = target, batch_size, seed

    def setup(self, stage=None):
        if hasattr(self, "splits"):
            return
        paths = [self.path] if isinstance(self.path, str) else list(self.path)
        if not paths:
            raise ValueError("traces: name at least one collect-traces output folder")
        parts, metas = [], []
        for path in paths:
            meta = read_metadata(path)  # first: a corrupt metadata.json is named, not a dataset error
            ds = load_traces(path)
            L_traces = len(ds["steps"][0]["confidence"])
            if L_traces != self.block_length and not self.any_block:
                raise ValueError(f"traces in {path} have blocks of {L_traces}, the filter expects "
                                 f"{self.block_length}: set filter.block_length: {L_traces}, or train a filter "
                                 "that serves any block length (kind positionwise without pos_in_block)")
            if metas and meta.get("weights") != metas[0].get("weights"):
                raise ValueError(f"traces in {path} come from other weights than {paths[0]}: a filter learns one "
                                 "model's confidences, train on traces of one model")
            gen_length = meta.get("decoding", {}).get("gen_length") or max(ds["sequences"]["end_position"]) + 1
            part = trace_tensors(ds, self.features, gen_length, meta.get("end_ids", [1]))
            parts.append(self._only_families(part, ds["sequences"], path) if self.families else part)
            metas.append(meta)
        self.meta = metas[0]
        t = _concat_padded(parts)
        label = t["eot_label"] if self.target == "eot" else t["label"]
        # The filter is judged where it acts: still-masked positions. The EoT predictor on all valid ones.
        mask = t["loss_mask"] if self.target == "filter" else (t["features"].abs().sum(-1) > 0)
        # Split by prompt id across folders: collections of one task stream share ids for the same problem,
        # so a problem's rows (every round, every block length) land in one split.
        split = split_prompts(t["prompt_id"].tolist(), self.seed)
        self.splits = {}
        for name, ids in split.items():
            rows = torch.tensor([int(p) in ids for p in t["prompt_id"].tolist()])
            self.splits[name] = TensorDataset(t["features"][rows], label[rows], mask[rows])
        if len(self.splits["train"]) == 0 or len(self.splits["val"]) == 0:
            raise ValueError(f"traces in {', '.join(paths)} are too few to split by prompt: collect more prompts")

    def _only_families(self, part: dict, sequences, path) -> dict:
        """The rows of prompts of `self.families` (each family must be in the collection: a typo is refused)."""
        family = dict(zip(sequences["prompt_id"], sequences["family"]))
        missing = set(self.families) - set(family.values())
        if missing:
            raise ValueError(f"families: {sorted(missing)} not in traces {path} (it holds "
                             f"{', '.join(sorted(set(family.values())))})")
        keep = torch.tensor([int(p) for p, f in family.items() if f in self.families])
        rows = torch.isin(part["prompt_id"], keep)
        return {k: v[rows] for k, v in part.items()}

    def train_dataloader(self):
        return DataLoader(self.splits["train"], batch_size=self.batch_size, shuffle=True,
                          generator=torch.Generator().manual_seed(self.seed))

    def val_dataloader(self):
        return DataLoader(self.splits["val"], batch_size=len(self.splits["val"]))

    def test_dataloader(self):
        return DataLoader(self.splits["test"], batch_size=max(len(self.splits["test"]), 1))


class FilterModule(L.LightningModule):
    def __init__(self, filter_config: dict, lr: float, weight_decay: float, false_accept_weight: float):
        super().__init__()
        self.save_hyperparameters()
        self.fcfg = FilterConfig(**filter_config)
        self.net = build_filter(self.fcfg)

    def _loss(self, batch):
        feats, labels, mask = batch
        logits = self.net(feats)
        weight = torch.where(labels, 1.0, self.hparams.false_accept_weight) * mask
        loss = (F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none") * weight).sum()
        return loss / weight.sum().clamp_min(1), logits[mask], labels[mask]

    def training_step(self, batch, _):
        loss, _, _ = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, on_epoch=True, on_step=False)
        return loss

    def _eval(self, batch, prefix):
        loss, logits, labels = self._loss(batch)
        self.log(f"{prefix}/loss", loss, prog_bar=True)
        for k, v in _metrics(logits, labels, self.fcfg.threshold).items():
            self.log(f"{prefix}/{k}", v, prog_bar=k == "auroc")

    def validation_step(self, batch, _):
        self._eval(batch, "val")

    def test_step(self, batch, _):
        self._eval(batch, "test")

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


class KeepBest(L.Callback):
    """Keep the weights of the epoch with the lowest validation loss (in memory; exported at the end)."""

    def __init__(self):
        self.best, self.state = float("inf"), None

    def on_validation_epoch_end(self, trainer, module):
        loss = trainer.callback_metrics.get("val/loss")
        if loss is not None and float(loss) < self.best and not trainer.sanity_checking:
            self.best = float(loss)
            self.state = {k: v.detach().clone() for k, v in module.net.state_dict().items()}


def _loggers(cfg: TrainFilterConfig):
    from learn2pd import tracking

    loggers = [L.pytorch.loggers.CSVLogger(cfg.log_dir, name=cfg.target)]
    if cfg.wandb:
        loggers.append(tracking.lightning_logger(cfg.log_dir, f"{cfg.target}-{Path(cfg.out).name}", cfg.wandb_project,
                                                 config=dataclasses.asdict(cfg)))
    return loggers


def train_filter(cfg: TrainFilterConfig, progress: bool = True) -> dict:
    """Train, test on held-out prompts, export the best epoch to `cfg.out`; returns the test metrics."""
    check_output(cfg.out, "out", folder=True, overwrite=cfg.overwrite, overwrite_flag=OVERWRITE_FLAG,
                 owns=FILTER_FILES, what="a learn2pd filter")
    if cfg.push_to_hub:
        check_repo_id(cfg.push_to_hub)  # before training, not after
    check_output(cfg.log_dir, "log_dir", folder=True, overwrite=cfg.overwrite, overwrite_flag=OVERWRITE_FLAG)
    L.seed_everything(cfg.seed, verbose=False)
    fcfg = cfg.filter_config()
    data = FilterDataModule(cfg.traces, fcfg.features, fcfg.block_length, cfg.target, cfg.batch_size, cfg.seed,
                            serves_any_block(fcfg), cfg.families)
    data.setup()
    fcfg.model_type = data.meta.get("model_type")
    module = FilterModule(dataclasses.asdict(fcfg), cfg.lr, cfg.weight_decay, cfg.false_accept_weight)
    best = KeepBest()
    loggers = _loggers(cfg)
    trainer = lightning_trainer(max_epochs=cfg.epochs, accelerator="cpu", logger=loggers, callbacks=[best],
                                enable_checkpointing=False, enable_progress_bar=progress, enable_model_summary=False,
                                log_every_n_steps=1, deterministic=True)
    start = time.perf_counter()
    try:
        trainer.fit(module, data)
    except SystemExit:  # Lightning turns Ctrl-C into a shutdown and exit(1): report it as the interrupt it was
        if trainer.state.status == "interrupted":
            raise KeyboardInterrupt from None
        raise
    seconds = time.perf_counter() - start
    if best.state is not None:
        module.net.load_state_dict(best.state)
    if cfg.calibrate_false_accept is not None:
        module.fcfg.threshold = calibrated_threshold(module, data, cfg.calibrate_false_accept)
    test = trainer.test(module, data, verbose=False)[0]
    module.net.config.training = {"traces": cfg.traces, "families": cfg.families, "target": cfg.target,
                                  "epochs": cfg.epochs, "lr": cfg.lr,
                                  "false_accept_weight": cfg.false_accept_weight,
                                  "calibrate_false_accept": cfg.calibrate_false_accept,
                                  "train_seconds": round(seconds, 1),
                                  "best_val_loss": best.best, **{k: float(v) for k, v in test.items()}}
    module.net.save_pretrained(cfg.out, overwrite=cfg.overwrite)
    write_model_card(cfg.out, data.meta, cfg.push_to_hub)  # README.md: what it was trained on, how to use it
    if cfg.push_to_hub:
        print(f"pushed {cfg.out} to {cfg.push_to_hub}: {push_filter(cfg.out, cfg.push_to_hub, data.meta)}")
    for lg in loggers:
        lg.finalize("success")
    if cfg.wandb:
        from learn2pd import tracking

        tracking.finish()
    return module.net.config.training


@torch.no_grad()
def calibrated_threshold(module: FilterModule, data: FilterDataModule, false_accept: float) -> float:
    """The threshold at which the validation split's false-accept rate is `false_accept`."""
    feats, labels, mask = data.splits["val"].tensors
    prob = torch.sigmoid(module.net.eval()(feats))[mask]
    return threshold_at_false_accept_rate(prob, labels[mask], false_accept)


def build_config(argv=None) -> TrainFilterConfig:
    return config_from_args(TrainFilterConfig, argv, "train-filter", __doc__.splitlines()[1],
                            "configs/filter/tiny.yaml")


def main(argv=None) -> int:
    argv = quiet_argv(sys.argv[1:] if argv is None else argv)  # --verbose: the libraries' own output

    def command() -> int:
        cfg = build_config(argv)
        metrics = train_filter(cfg)
        print(f"exported {cfg.out}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith("test/")))
        return 0

    return run_command("train-filter", command)


if __name__ == "__main__":
    sys.exit(main())
