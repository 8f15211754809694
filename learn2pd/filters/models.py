"""Filter networks, saved as `config.json` + `model.safetensors`.

- `Learn2PDFilter` (the published baseline): the block's confidences in position order ->
  Linear(L, H) -> ReLU -> Linear(H, L): one logit per position (2,112 parameters at L = H = 32).
- `PositionwiseFilter` (ours): per-position features, a small 1-D convolution over the block for
  context, then a per-position MLP. Without a block-bound feature (`pos_in_block`) it serves any block
  length, 32 to full diffusion: the convolution is local, so a position's score does not depend on the
  window's width (`serves_any_block`).
- `EoTPredictor`: same shape as the positionwise filter; its logit says "the answer has ended at or
  before this position".
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from learn2pd.atomic import atomic_dir
from learn2pd.configfile import build, check_fields, option
from learn2pd.filters.features import BLOCK_BOUND, FEATURES

KINDS = ("learn2pd", "positionwise", "eot")
DEFAULT_FEATURES = {
    "learn2pd": ["confidence"],
    "positionwise": ["confidence", "margin", "entropy"],  # the winner on the tiny model's held-out traces
    "eot": ["confidence", "is_end", "pos_in_block", "pos_in_answer"],
}


@dataclass
class FilterConfig:
    kind: str = option("learn2pd", choices=KINDS)
    block_length: int = option(32, gt=0)
    hidden: int = option(32, gt=0)
    layers: int = option(2, gt=0)
    kernel: int = option(5, gt=0)
    features: list[str] | None = None  # default: DEFAULT_FEATURES of the kind
    threshold: float = option(0.96, ge=0, le=1)  # inference acceptance threshold (Learn2PD: 0.96 LLaDA, 0.9 Dream)
    # thresholds chosen by decoding validation problems, per block length ("32": 0.9); over `threshold`
    thresholds: dict = field(default_factory=dict)
    model_type: str | None = None  # the dLLM the filter was trained on (checked at load time)
    training: dict = field(default_factory=dict)  # metrics and settings of the run that made it

    def __post_init__(self):
        check_fields(self, lambda key: f"filter {key}")
        if self.kind not in KINDS:
            raise ValueError(f"unknown filter kind {self.kind!r}: choose from {', '.join(KINDS)}")
        if self.features is None:
            self.features = list(DEFAULT_FEATURES[self.kind])
        bad = [f for f in self.features if f not in FEATURES]
        if bad:
            raise ValueError(f"unknown filter features {bad}: choose from {', '.join(FEATURES)}")
        if self.kind == "learn2pd" and self.features != ["confidence"]:
            raise ValueError("the learn2pd filter reads confidences only; use kind 'positionwise' for more features")


FILTER_FILES = ("config.json", "model.safetensors", "README.md")  # what a filter folder holds (save_pretrained writes)


def serves_any_block(config: FilterConfig) -> bool:
    """A per-position network with no feature tied to the trained block length reads any window."""
    return config.kind != "learn2pd" and not BLOCK_BOUND & set(config.features)


class FilterModule(nn.Module):
    config: FilterConfig

    def save_pretrained(self, directory: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write config.json and model.safetensors into `directory`, replacing it atomically; a folder holding
        other files is refused unless `overwrite` (it is not a filter, and would be deleted)."""
        with atomic_dir(directory, FILTER_FILES, "a learn2pd filter", overwrite) as tmp:
            (tmp / "config.json").write_text(json.dumps(dataclasses.asdict(self.config), indent=2) + "\n")
            save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()},
                      str(tmp / "model.safetensors"))
        return Path(directory)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str = "cpu"):
        return load_filter(directory, map_location)


class Learn2PDFilter(FilterModule):
    def __init__(self, config: FilterConfig):
        super().__init__()
        self.config = config
        L, H = config.block_length, config.hidden
        layers: list[nn.Module] = [nn.Linear(L, H)]
        for _ in range(config.layers - 2):
            layers += [nn.ReLU(), nn.Linear(H, H)]
        layers += [nn.ReLU(), nn.Linear(H, L)] if config.layers >= 2 else []
        if config.layers == 1:
            layers = [nn.Linear(L, L)]
        self.net = nn.Sequential(*layers)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """feats [N, L, 1] (confidences) -> logits [N, L]."""
        if feats.shape[1] != self.config.block_length:
            raise ValueError(f"this filter was trained for blocks of {self.config.block_length}, got {feats.shape[1]}")
        return self.net(feats[..., 0])


class PositionwiseFilter(FilterModule):
    def __init__(self, config: FilterConfig):
        super().__init__()
        self.config = config
        F_in, H = len(config.features), config.hidden
        self.context = nn.Conv1d(F_in, H, config.kernel, padding=config.kernel // 2)
        blocks: list[nn.Module] = [nn.Linear(H + F_in, H), nn.ReLU()]
        for _ in range(config.layers - 2):
            blocks += [nn.Linear(H, H), nn.ReLU()]
        blocks.append(nn.Linear(H, 1))
        self.head = nn.Sequential(*blocks)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """feats [N, L, F] -> logits [N, L] (any L)."""
        ctx = torch.relu(self.context(feats.transpose(1, 2))).transpose(1, 2)
        return self.head(torch.cat([ctx, feats], -1))[..., 0]


class EoTPredictor(PositionwiseFilter):
    pass


def build_filter(config: FilterConfig) -> FilterModule:
    return {"learn2pd": Learn2PDFilter, "positionwise": PositionwiseFilter, "eot": EoTPredictor}[config.kind](config)


def load_filter(directory: str | os.PathLike, map_location: str = "cpu") -> FilterModule:
    directory = Path(directory)
    cfg_file = directory / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"no filter at {directory} (config.json missing): train one with `train-filter`")
    try:
        raw = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_file} is not valid JSON ({e}): re-export the filter or retrain it") from None
    if "kind" not in raw:  # every saved filter config has it; a dLLM's config.json has architectures/model_type
        what = "a model, not a filter" if {"architectures", "model_type"} & set(raw) else "not a filter"
        raise ValueError(f"{directory} looks like {what} (its config.json has no 'kind'): pass a filter folder, "
                         "or train one from traces with `train-filter`")
    raw.pop("model_config_hash", None)  # written by older versions, never checked
    module = build_filter(build(FilterConfig, raw, str(cfg_file)))
    weights = directory / "model.safetensors"
    try:
        state = load_file(str(weights), device=map_location)
    except SafetensorError as e:
        raise ValueError(f"{weights} is corrupted or truncated ({e}): re-export the filter or retrain it "
                         "with `train-filter`") from None
    try:
        module.load_state_dict(state)
    except RuntimeError as e:  # sizes or names differ from what config.json describes
        detail = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e))
        raise ValueError(f"{weights} does not match {cfg_file} ({detail}): re-export the filter or retrain "
                         "it with `train-filter`") from None
    return module.eval()
