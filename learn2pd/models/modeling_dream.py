"""The Dream architecture (Qwen2-style, bidirectional) as a transformers PreTrainedModel.

Parameter names match the published Dream checkpoints (`model.layers.{i}.self_attn.q_proj.weight`,
`lm_head.weight`, ...), so `load_model(<folder of Dream-v0-Instruct-7B>)` loads the real weights without
remote code. Dream predicts the token at position i from position i - 1 (it was initialised from an
autoregressive model): `logits[:, i]` is the distribution of token i + 1. The decoding engine realigns
them (ModelSpec.logit_shift).

As the published code computes it: RMSNorm in float32 with the weight applied after the cast back;
RoPE tables in float32 cast to the model's dtype, rotation in that dtype; q/k/v projections with bias;
SDPA attention without a causal mask. For a left-padded batch, `position_ids` default to the positions
Dream's `diffusion_generate` builds (cumulative count of real tokens minus one, 1 at padding) and padded
keys are masked (Dream's 4-D mask also blanks padded query rows, whose outputs nothing reads).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput

from learn2pd.models.configuration_dream import DreamConfig
from learn2pd.models.kv_cache import through_cache
from learn2pd.models.modeling_llada import RMSNorm, init_weights


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Dream's position ids for a left-padded batch: real tokens count from 0, padding sits at 1."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 1)


class DreamRotary(nn.Module):
    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        self.head_dim, self.theta = head_dim, theta

    def tables(self, positions: torch.Tensor, dtype: torch.dtype):
        """positions [B, T] -> (cos, sin) [B, 1, T, head_dim], computed in float32, cast to `dtype`."""
        inv = 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.int64,
                                                  device=positions.device).float() / self.head_dim))
        freqs = positions.float()[..., None] * inv
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]


def _rotate(t, cos, sin):
    t1, t2 = t.chunk(2, dim=-1)
    return t * cos + torch.cat((-t2, t1), dim=-1) * sin


class DreamAttention(nn.Module):
    def __init__(self, config: DreamConfig):
        super().__init__()
        d = config.hidden_size
        self.n_heads, self.n_kv = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = d // self.n_heads
        self.q_proj = nn.Linear(d, self.n_heads * self.head_dim, bias=True)
        self.k_proj = nn.Linear(d, self.n_kv * self.head_dim, bias=True)
        self.v_proj = nn.Linear(d, self.n_kv * self.head_dim, bias=True)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, d, bias=False)

    def forward(self, x, tables, attn_mask, cache=None):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        cos, sin = tables
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        k, v = through_cache(cache, k, v)
        if self.n_kv != self.n_heads:
            rep = self.n_heads // self.n_kv
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=False)
        return self.o_proj(att.transpose(1, 2).reshape(B, T, -1))


class DreamMLP(nn.Module):
    def __init__(self, config: DreamConfig):
        super().__init__()
        d, m = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(d, m, bias=False)
        self.up_proj = nn.Linear(d, m, bias=False)
        self.down_proj = nn.Linear(m, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DreamLayer(nn.Module):
    def __init__(self, config: DreamConfig):
        super().__init__()
        self.self_attn = DreamAttention(config)
        self.mlp = DreamMLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x, tables, attn_mask, cache=None):
        x = x + self.self_attn(self.input_layernorm(x), tables, attn_mask, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class DreamBaseModel(nn.Module):
    def __init__(self, config: DreamConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DreamLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary = DreamRotary(config.hidden_size // config.num_attention_heads, config.rope_theta)


class DreamPreTrainedModel(PreTrainedModel):
    config_class = DreamConfig
    base_model_prefix = "model"
    _no_split_modules = ["DreamLayer"]
    _supports_sdpa = True

    def _init_weights(self, module):
        init_weights(module, self.config.initializer_range)


class DreamModel(DreamPreTrainedModel):
    """Dream mask predictor. `logits[b, i]` is the distribution of the token at position i + 1."""

    supports_kv_cache = True

    def __init__(self, config: DreamConfig):
        super().__init__(config)
        self.model = DreamBaseModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def forward(self, input_ids, attention_mask=None, position_ids=None, labels=None, cache=None, cache_rows=None,
                cache_positions=None, cache_keys=None, positions=None, **kwargs) -> MaskedLMOutput:
        """attention_mask [B, keys] (1 = real key); position_ids [B, T] (default: Dream's for left padding,
        or 0..T-1); `positions` is accepted as an alias. cache/cache_rows/cache_positions/cache_keys: the
        KV-cache protocol of learn2pd.models.kv_cache (a full forward fills it, a fed forward reads it)."""
        B, T = input_ids.shape
        if position_ids is None:
            position_ids = positions
        if position_ids is None:
            padded = attention_mask is not None and not bool(attention_mask.all())
            if cache_positions is not None:  # fed columns: their positions among the row's keys
                full = positions_from_mask(attention_mask) if padded else None
                position_ids = cache_positions if full is None else \
                    full.gather(1, cache_positions.clamp(max=full.shape[1] - 1))
            elif padded:
                position_ids = positions_from_mask(attention_mask)
            else:
                position_ids = torch.arange(T, device=input_ids.device)
        if position_ids.dim() == 1:
            position_ids = position_ids.expand(B, -1)
        x = self.model.embed_tokens(input_ids)
        tables = self.model.rotary.tables(position_ids, x.dtype)
        attn_mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            attn_mask = attention_mask.bool()[:, None, None, :]
        for i, layer in enumerate(self.model.layers):
            x = layer(x, tables, attn_mask,
                      None if cache is None else (cache, i, cache_rows, cache_positions, cache_keys))
        logits = self.lm_head(self.model.norm(x))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)
        return MaskedLMOutput(loss=loss, logits=logits)
