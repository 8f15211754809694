"""The LLaDA architecture as a transformers PreTrainedModel.

Parameter names match the published checkpoints (`model.transformer.blocks.{i}.q_proj.weight`, ...), so
`LLaDAModelLM.from_pretrained(<folder of GSAI-ML/LLaDA-8B-Instruct>)` loads the real weights without
remote code. Attention is bidirectional (a mask predictor, not a causal LM).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput

from learn2pd.models.configuration_llada import LLaDAConfig
from learn2pd.models.kv_cache import through_cache


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in float32 whatever the model dtype, as the reference does. F.rms_norm is the same
        # x * rsqrt(mean(x^2) + eps) in one kernel (bitwise equal here, ~6x faster on CPU than four ops).
        return self.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)


class RotaryEmbedding(nn.Module):
    """RoPE with the half-split rotation (`rotate_half`), applied in float32.

    The frequencies are computed in float32 at each call, not kept in a buffer: a non-persistent buffer is
    not in checkpoints, so `from_pretrained` (transformers >= 5 builds the model on the meta device) left it
    uninitialised, and `model.to(torch.bfloat16)` rounded it. The reference's RoPE tables are always float32.
    """

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        self.head_dim, self.theta = head_dim, theta

    def inv_freq(self, device=None) -> torch.Tensor:
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.float, device=device) / self.head_dim
        return 1.0 / (self.theta ** exponents)

    def tables(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) in float32 for positions [T] -> [1, 1, T, head_dim], or per row [R, T] -> [R, 1, T,
        head_dim]: computed once per forward, shared by every layer."""
        freqs = positions.float()[..., None] * self.inv_freq(positions.device)  # = outer product, per row
        emb = torch.cat((freqs, freqs), dim=-1)
        if emb.dim() == 2:
            return emb.cos()[None, None], emb.sin()[None, None]
        return emb.cos()[:, None], emb.sin()[:, None]

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor):
        return self.apply(q, k, self.tables(positions))

    @staticmethod
    def apply(q: torch.Tensor, k: torch.Tensor, tables: tuple[torch.Tensor, torch.Tensor]):
        cos, sin = tables
        return _rotate(q.float(), cos, sin).type_as(q), _rotate(k.float(), cos, sin).type_as(k)


def _rotate(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    t1, t2 = t.chunk(2, dim=-1)
    return t * cos + torch.cat((-t2, t1), dim=-1) * sin


class LLaDABlock(nn.Module):
    """Pre-norm block: bidirectional attention, then a SwiGLU MLP (LLaDA's "llama" block)."""

    def __init__(self, config: LLaDAConfig):
        super().__init__()
        d, bias = config.d_model, config.include_bias
        self.n_heads, self.n_kv_heads = config.n_heads, config.n_kv_heads
        self.head_dim = d // config.n_heads
        kv_dim = self.n_kv_heads * self.head_dim
        qkv_bias = bias or config.include_qkv_bias
        self.attn_norm = RMSNorm(d, config.rms_norm_eps)
        self.ff_norm = RMSNorm(d, config.rms_norm_eps)
        self.q_proj = nn.Linear(d, d, bias=qkv_bias)
        self.k_proj = nn.Linear(d, kv_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(d, kv_dim, bias=qkv_bias)
        self.attn_out = nn.Linear(d, d, bias=bias)
        self.ff_proj = nn.Linear(d, config.mlp_hidden_size, bias=bias)
        self.up_proj = nn.Linear(d, config.mlp_hidden_size, bias=bias)
        self.ff_out = nn.Linear(config.mlp_hidden_size, d, bias=bias)

    def forward(self, x, rope_tables, attn_mask, cache=None):
        """cache: None, or (KVCache, layer, rows, write positions [R, T] or None, keys). With None positions
        the rows are computed whole and their keys/values stored; else the fed positions' keys/values are
        written there and attention reads the rows' first `keys` cached keys and values."""
        B, T, _ = x.shape
        h = self.attn_norm(x)
        q = self.q_proj(h).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(h).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(h).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = RotaryEmbedding.apply(q, k, rope_tables)
        k, v = through_cache(cache, k, v)
        if self.n_kv_heads != self.n_heads:
            rep = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=False)
        x = x + self.attn_out(att.transpose(1, 2).reshape(B, T, -1))
        h = self.ff_norm(x)
        return x + self.ff_out(F.silu(self.ff_proj(h)) * self.up_proj(h))


class LLaDAModel(nn.Module):
    def __init__(self, config: LLaDAConfig):
        super().__init__()
        self.config = config
        blocks = nn.ModuleList(LLaDABlock(config) for _ in range(config.n_layers))
        modules = {
            "wte": nn.Embedding(config.embedding_size, config.d_model),
            "blocks": blocks,
            "ln_f": RMSNorm(config.d_model, config.rms_norm_eps),
        }
        if not config.weight_tying:
            modules["ff_out"] = nn.Linear(config.d_model, config.embedding_size, bias=config.include_bias)
        self.transformer = nn.ModuleDict(modules)
        self.rotary = RotaryEmbedding(config.d_model // config.n_heads, config.rope_theta)

    def forward(self, input_ids, attention_mask=None, positions=None, cache=None, cache_rows=None,
                cache_positions=None, cache_keys=None):
        """attention_mask: [B, keys] (keys: T, or with cache_positions `cache_keys`).
        positions: [T] or [B, T] RoPE positions (default 0..T-1). cache: a KVCache to fill (full forward of
        `cache_rows`) or, with cache_positions [B, T], to read (the fed tokens' keys/values are written
        there, the rest of each row's first `cache_keys` positions comes from the cache)."""
        B, T = input_ids.shape
        x = self.transformer.wte(input_ids)
        if positions is None:  # column positions (padding included), as LLaDA's own forward
            positions = cache_positions if cache_positions is not None else torch.arange(T, device=input_ids.device)
        attn_mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            # [B, 1, 1, keys] boolean key mask: padded keys are invisible to every query.
            attn_mask = attention_mask.bool()[:, None, None, :]
        tables = self.rotary.tables(positions)
        for i, block in enumerate(self.transformer.blocks):
            x = block(x, tables, attn_mask,
                      None if cache is None else (cache, i, cache_rows, cache_positions, cache_keys))
        x = self.transformer.ln_f(x)
        if self.config.weight_tying:
            return F.linear(x, self.transformer.wte.weight)
        return self.transformer.ff_out(x)


def init_weights(module: nn.Module, std: float) -> None:
    """Normal(0, std) for linear and embedding weights, zero biases, unit norms (both families)."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=std)
    elif isinstance(module, RMSNorm):
        nn.init.ones_(module.weight)


class LLaDAPreTrainedModel(PreTrainedModel):
    config_class = LLaDAConfig
    base_model_prefix = "model"
    _no_split_modules = ["LLaDABlock"]
    _supports_sdpa = True

    def _init_weights(self, module):
        init_weights(module, self.config.init_std)


class LLaDAModelLM(LLaDAPreTrainedModel):
    """LLaDA mask predictor: `logits[b, i]` is the distribution of the token at position i.

    Supports learn2pd's KV cache (`learn2pd.models.kv_cache.KVCache`) for Fast-dLLM's prefix and dual
    caching: `supports_kv_cache` tells the decoding engine so."""

    supports_kv_cache = True

    def __init__(self, config: LLaDAConfig):
        super().__init__(config)
        self.model = LLaDAModel(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.transformer.wte

    def forward(self, input_ids, attention_mask=None, positions=None, labels=None, cache=None, cache_rows=None,
                cache_positions=None, cache_keys=None, **kwargs) -> MaskedLMOutput:
        logits = self.model(input_ids, attention_mask=attention_mask, positions=positions, cache=cache,
                            cache_rows=cache_rows, cache_positions=cache_positions, cache_keys=cache_keys)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)
        return MaskedLMOutput(loss=loss, logits=logits)

    def num_parameters_millions(self) -> float:
        return sum(p.numel() for p in self.parameters()) / 1e6

