"""The policy network: one small transformer layer over the current block, a Bernoulli logit per position.

Per position it reads the dLLM's confidence, whether the position is still masked, and the fraction of the
forward budget used so far (the row's forwards / gen length, the same for every position of a row). It
has no positional encoding: it sees the block as a set of positions, so the same weights run at any block
length (32, or the whole region in full diffusion). Saved as `config.json` + `model.safetensors`.

Warm start: the logit is the transformer's output plus `scale * (confidence - center)`, both learnable, the
head initialised at zero. The untrained policy is a soft confidence threshold at `center` (0.9, Fast-dLLM's
tau), so the first rollouts already decode sensibly and GRPO improves on a heuristic rather than on noise.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from learn2pd.filters.models import FilterModule

KIND = "rl-policy"  # marks a policy's config.json (a filter's has another kind, a model's none)
FEATURES = ("confidence", "masked", "nfe_fraction")


@dataclass
class PolicyConfig:
    kind: str = KIND
    width: int = 128  # transformer width (the paper's 128)
    heads: int = 2
    ffn: int = 512  # feed-forward width of the layer
    layers: int = 1
    init_center: float = 0.9  # warm start: a soft threshold at this confidence...
    init_scale: float = 20.0  # ...this steep (logit per unit of confidence)
    threshold: float = 0.5  # evaluation: commit candidates with probability above it (set on validation)
    model_type: str | None = None  # the dLLM family it was trained on (checked when decoding)
    training: dict = field(default_factory=dict)  # settings and figures of the run that made it

    def __post_init__(self):
        if self.kind != KIND:
            raise ValueError(f"config kind {self.kind!r} is not an unmasking policy ({KIND!r})")
        if self.width <= 0 or self.heads <= 0 or self.width % self.heads:
            raise ValueError(f"policy width ({self.width}) must be a positive multiple of heads ({self.heads})")
        if self.layers < 1:
            raise ValueError(f"policy layers must be >= 1, got {self.layers}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"policy threshold must be in [0, 1], got {self.threshold}")


class UnmaskingPolicyNet(FilterModule):  # saved as the filters are: config.json + model.safetensors
    config: PolicyConfig

    def __init__(self, config: PolicyConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Linear(len(FEATURES), config.width)
        layer = nn.TransformerEncoderLayer(config.width, config.heads, config.ffn, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.head = nn.Linear(config.width, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.scale = nn.Parameter(torch.tensor(float(config.init_scale)))
        self.center = nn.Parameter(torch.tensor(float(config.init_center)))

    def forward(self, feats: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """feats [N, L, 3] (FEATURES), valid [N, L] bool (inside the block) -> logits [N, L]."""
        pad = ~valid
        pad = pad & valid.any(-1, keepdim=True)  # a row with no valid position attends to all (never NaN)
        h = self.encoder(self.embed(feats), src_key_padding_mask=pad)
        return self.head(h)[..., 0] + self.scale * (feats[..., 0] - self.center)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str = "cpu") -> UnmaskingPolicyNet:
        return load_policy_net(directory, map_location)


def policy_features(confidence: torch.Tensor, masked: torch.Tensor, nfe_fraction: torch.Tensor,
                    valid: torch.Tensor) -> torch.Tensor:
    """[N, L] confidence and masked, [N] forwards used / gen length -> [N, L, 3]; zero outside `valid`."""
    cols = [confidence.float(), masked.float(), nfe_fraction.float()[:, None].expand_as(confidence)]
    return torch.stack(cols, -1) * valid[..., None]


def load_policy_net(directory: str | os.PathLike, map_location: str = "cpu") -> UnmaskingPolicyNet:
    directory = Path(directory)
    cfg_file = directory / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"no unmasking policy at {directory} (config.json missing): train one with "
                                "`train-policy --config configs/policy/tiny.yaml`")
    try:
        raw = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_file} is not valid JSON ({e}): re-export the policy or retrain it") from None
    if raw.get("kind") != KIND:
        what = ("a learned filter: decode with learned:path=" + str(directory)) if "kind" in raw else \
            "a model or something else"
        raise ValueError(f"{directory} is not an unmasking policy (its config.json has kind {raw.get('kind')!r}; "
                         f"it looks like {what}): pass a folder written by `train-policy`")
    net = UnmaskingPolicyNet(PolicyConfig(**raw))
    weights = directory / "model.safetensors"
    try:
        state = load_file(str(weights), device=map_location)
    except SafetensorError as e:
        raise ValueError(f"{weights} is corrupted or truncated ({e}): re-export the policy or retrain it") from None
    net.load_state_dict(state)
    return net.eval()
