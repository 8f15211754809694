"""Plain, loop-based re-implementations of the public reference code, used as test oracles.

Written from the behaviour of:

* GSAI-ML/LLaDA-8B-Instruct ``modeling_llada.py`` (``LLaDALlamaBlock``, the version that honours
  ``attention_mask``): RMSNorm computed in float32 and cast back before the weight, RoPE from
  ``RotaryEmbedding`` (sin/cos of ``cat(freqs, freqs)`` in float32, ``rotate_half`` = ``cat(-x2, x1)``,
  applied in full precision since ``rope_full_precision`` is true), separate q/k/v projections, GQA by
  ``repeat_interleave`` of k/v heads, a float additive bias ``(1 - mask) * finfo(float32).min`` added to a
  zero (bidirectional) bias, ``attn_out``, MLP ``ff_out(silu(ff_proj(x)) * up_proj(x))``, ``ln_f`` and the
  ``ff_out`` LM head.
* ML-GSAI/LLaDA ``generate.py`` (``get_num_transfer_tokens``, per-row ``topk`` with low-confidence or random
  remasking, Gumbel-max noise in float64, classifier-free guidance, optional attention mask).
* NVlabs/Fast-dLLM ``llada/generate.py`` (no-cache ``generate`` with ``threshold`` / ``factor`` and its
  ``get_transfer_index`` / ``get_transfer_index_dynamic``).

Nothing here imports learn2pd: the code is deliberately naive (explicit loops over layers, batch rows and
heads; attention written out as softmax(q k^T / sqrt(d) + bias) v) so that it is easy to check by eye.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# --------------------------------------------------------------------------------------------------
# (a) LLaDA forward pass, reading weights by the published parameter names
# --------------------------------------------------------------------------------------------------

PREFIX = "model.transformer."
BLOCK_PARAMS = ("attn_norm", "ff_norm", "q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out")


def published_param_names(n_layers: int, weight_tying: bool = False) -> list[str]:
    """The parameter names of a published LLaDA checkpoint ("llama" blocks, no biases)."""
    names = [PREFIX + "wte.weight"]
    for i in range(n_layers):
        names += [f"{PREFIX}blocks.{i}.{p}.weight" for p in BLOCK_PARAMS]
    names.append(PREFIX + "ln_f.weight")
    if not weight_tying:
        names.append(PREFIX + "ff_out.weight")
    return names


def ref_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    og_dtype = x.dtype
    h = x.to(torch.float32)
    variance = h.pow(2).mean(-1, keepdim=True)
    h = h * torch.rsqrt(variance + eps)
    return weight * h.to(og_dtype)


def ref_rope_tables(seq_len: int, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(sin, cos), each [seq_len, head_dim], float32."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    seq = torch.arange(seq_len, dtype=torch.float32)
    freqs = torch.einsum("i,j->ij", seq, inv_freq)
    angles = torch.cat((freqs, freqs), dim=-1)
    return angles.sin(), angles.cos()


def ref_rotate_half(t: torch.Tensor) -> torch.Tensor:
    half = t.shape[-1] // 2
    x1, x2 = t[..., :half], t[..., half:]
    return torch.cat((-x2, x1), dim=-1)


def ref_apply_rope(t: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """t: [T, head_dim] of one (row, head); rotated in float32, cast back to t's dtype."""
    t32 = t.float()
    return (t32 * cos + ref_rotate_half(t32) * sin).to(t.dtype)


def ref_attention_bias(attention_mask: torch.Tensor | None, batch: int, seq_len: int) -> torch.Tensor | None:
    """[B, 1, T, T] float32 additive bias as the public LLaDAModel.forward builds it (None: no bias)."""
    if attention_mask is None or not bool((attention_mask == 0).any()):
        return None
    m = attention_mask.to(torch.float32).view(batch, -1)[:, None, None, :]
    pad_bias = (1.0 - m) * torch.finfo(torch.float32).min
    bias = torch.zeros(1, 1, seq_len, seq_len, dtype=torch.float32) + pad_bias
    return bias.masked_fill(bias == float("-inf"), torch.finfo(torch.float32).min)


def ref_forward(state_dict: dict, config, input_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Logits [B, T, V] of the LLaDA "llama" architecture, weights looked up by published name."""
    W = state_dict
    d, n_heads = config.d_model, config.n_heads
    n_kv = config.n_kv_heads if config.n_kv_heads is not None else n_heads
    hd = d // n_heads
    eps = config.rms_norm_eps
    B, T = input_ids.shape
    sin, cos = ref_rope_tables(T, hd, config.rope_theta)
    bias = ref_attention_bias(attention_mask, B, T)

    x = W[PREFIX + "wte.weight"][input_ids]  # embedding lookup
    for layer in range(config.n_layers):
        p = f"{PREFIX}blocks.{layer}."
        h = ref_rms_norm(x, W[p + "attn_norm.weight"], eps)
        q = h @ W[p + "q_proj.weight"].T
        k = h @ W[p + "k_proj.weight"].T
        v = h @ W[p + "v_proj.weight"].T
        att = torch.zeros(B, T, d, dtype=x.dtype)
        for b in range(B):
            for head in range(n_heads):
                kv_head = head // (n_heads // n_kv)  # repeat_interleave over the kv heads
                qh = q[b, :, head * hd:(head + 1) * hd]
                kh = k[b, :, kv_head * hd:(kv_head + 1) * hd]
                vh = v[b, :, kv_head * hd:(kv_head + 1) * hd]
                qh, kh = ref_apply_rope(qh, sin, cos), ref_apply_rope(kh, sin, cos)
                scores = (qh @ kh.T) / math.sqrt(hd)
                if bias is not None:
                    scores = scores + bias[b, 0].to(scores.dtype)
                probs = torch.softmax(scores, dim=-1)
                att[b, :, head * hd:(head + 1) * hd] = probs @ vh
        x = x + att @ W[p + "attn_out.weight"].T
        h = ref_rms_norm(x, W[p + "ff_norm.weight"], eps)
        gate = h @ W[p + "ff_proj.weight"].T
        up = h @ W[p + "up_proj.weight"].T
        x = x + (F.silu(gate) * up) @ W[p + "ff_out.weight"].T
    x = ref_rms_norm(x, W[PREFIX + "ln_f.weight"], eps)
    head_w = W[PREFIX + "wte.weight"] if config.weight_tying else W[PREFIX + "ff_out.weight"]
    return x @ head_w.T


# --------------------------------------------------------------------------------------------------
# (b) LLaDA's reference generate
# --------------------------------------------------------------------------------------------------

class CountingModel:
    """Wraps `fn(x, attention_mask) -> logits` and counts calls (one call = one NFE)."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x, attention_mask=None):
        self.calls += 1
        return self.fn(x, attention_mask)


def hf_model_fn(model):
    """A callable for the reference generators from a transformers-style model returning `.logits`."""
    def fn(x, attention_mask=None):
        with torch.no_grad():
            return model(x, attention_mask=attention_mask).logits
    return fn


def ref_add_gumbel_noise(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    if temperature == 0:
        return logits
    logits64 = logits.to(torch.float64)
    u = torch.rand_like(logits64, dtype=torch.float64)
    return logits64.exp() / (-torch.log(u)) ** temperature


def ref_get_num_transfer_tokens(block_mask_index: torch.Tensor, steps: int) -> torch.Tensor:
    """[B, steps]: each row's block mask count split evenly, remainder to the earliest steps."""
    B = block_mask_index.shape[0]
    out = torch.zeros(B, steps, dtype=torch.int64)
    for row in range(B):
        n = int(block_mask_index[row].sum())
        for s in range(steps):
            out[row, s] = n // steps + (1 if s < n % steps else 0)
    return out


@torch.no_grad()
def ref_llada_generate(model, prompt: torch.Tensor, attention_mask: torch.Tensor | None = None, steps: int = 128,
                       gen_length: int = 128, block_length: int = 128, temperature: float = 0.0,
                       cfg_scale: float = 0.0, remasking: str = "low_confidence", mask_id: int = 126336,
                       softmax_dtype: torch.dtype | None = torch.float64):
    """LLaDA's `generate`. `model(x, attention_mask) -> logits`. Returns (x [B, P + G], nfe, commits),
    commits[b] listing the tokens row b committed at each forward.

    `softmax_dtype`: dtype of the confidence softmax. float64 as in the project's REFERENCE.md and
    Fast-dLLM; the current LLaDA repo takes the softmax of the logits as they come (pass None for that).
    """
    counting = CountingModel(model)
    B, P = prompt.shape
    x = torch.full((B, P + gen_length), mask_id, dtype=torch.long)
    x[:, :P] = prompt
    if attention_mask is not None:
        attention_mask = torch.cat([attention_mask, torch.ones(B, gen_length, dtype=attention_mask.dtype)], dim=-1)
    prompt_index = x != mask_id
    commits: list[list[int]] = [[] for _ in range(B)]

    assert gen_length % block_length == 0
    num_blocks = gen_length // block_length
    assert steps % num_blocks == 0
    steps_per_block = steps // num_blocks

    for nb in range(num_blocks):
        start, end = P + nb * block_length, P + (nb + 1) * block_length
        num_transfer = ref_get_num_transfer_tokens(x[:, start:end] == mask_id, steps_per_block)
        for i in range(steps_per_block):
            mask_index = x == mask_id
            if cfg_scale > 0.0:
                un_x = x.clone()
                un_x[prompt_index] = mask_id
                both_mask = None if attention_mask is None else torch.cat([attention_mask, attention_mask], dim=0)
                both = counting(torch.cat([x, un_x], dim=0), both_mask)
                cond, uncond = both[:B], both[B:]
                logits = uncond + (cfg_scale + 1) * (cond - uncond)
            else:
                logits = counting(x, attention_mask)

            x0 = torch.argmax(ref_add_gumbel_noise(logits, temperature), dim=-1)
            if remasking == "low_confidence":
                probs = F.softmax(logits if softmax_dtype is None else logits.to(softmax_dtype), dim=-1)
                x0_p = torch.gather(probs, -1, x0[..., None])[..., 0]
            elif remasking == "random":
                x0_p = torch.rand(x0.shape)
            else:
                raise NotImplementedError(remasking)
            x0_p[:, end:] = float("-inf")

            x0 = torch.where(mask_index, x0, x)
            confidence = torch.where(mask_index, x0_p, torch.tensor(float("-inf"), dtype=x0_p.dtype))
            transfer = torch.zeros_like(x0, dtype=torch.bool)
            for row in range(B):
                _, idx = torch.topk(confidence[row], k=int(num_transfer[row, i]))
                transfer[row, idx] = True
                commits[row].append(int(transfer[row].sum()))
            x[transfer] = x0[transfer]
    return x, counting.calls, commits


# --------------------------------------------------------------------------------------------------
# (c) Fast-dLLM no-cache generate with threshold / factor
# --------------------------------------------------------------------------------------------------

def _fast_confidence(logits, temperature, remasking, mask_index, x):
    x0 = torch.argmax(ref_add_gumbel_noise(logits, temperature), dim=-1)
    if remasking == "low_confidence":
        probs = F.softmax(logits.to(torch.float64), dim=-1)
        x0_p = torch.gather(probs, -1, x0[..., None])[..., 0]
    elif remasking == "random":
        x0_p = torch.rand(x0.shape)
    else:
        raise NotImplementedError(remasking)
    x0 = torch.where(mask_index, x0, x)
    confidence = torch.where(mask_index, x0_p, torch.tensor(float("-inf"), dtype=x0_p.dtype))
    return x0, confidence


def ref_transfer_threshold(confidence: torch.Tensor, mask_index: torch.Tensor, threshold: float) -> torch.Tensor:
    """Fast-dLLM `get_transfer_index` with a threshold: top-1 always, others kept if conf >= threshold."""
    transfer = torch.zeros_like(mask_index)
    for row in range(confidence.shape[0]):
        n = int(mask_index[row].sum())
        _, idx = torch.topk(confidence[row], k=n)
        transfer[row, idx] = True
        for k in range(1, n):
            if confidence[row, idx[k]] < threshold:
                transfer[row, idx[k]] = False
    return transfer


def ref_transfer_quota(confidence: torch.Tensor, num_transfer: torch.Tensor) -> torch.Tensor:
    """Fast-dLLM `get_transfer_index` without threshold: per-row top-k."""
    transfer = torch.zeros(confidence.shape, dtype=torch.bool)
    for row in range(confidence.shape[0]):
        _, idx = torch.topk(confidence[row], k=int(num_transfer[row]))
        transfer[row, idx] = True
    return transfer


def ref_transfer_factor(confidence: torch.Tensor, mask_index: torch.Tensor, factor: float) -> torch.Tensor:
    """Fast-dLLM `get_transfer_index_dynamic`, edge case included (Python-float thresholds)."""
    transfer = torch.zeros_like(mask_index)
    for row in range(confidence.shape[0]):
        n = int(mask_index[row].sum())
        threshs = [1 - factor / (m + 1) for m in range(1, n + 1)]
        threshs[0] = -1
        sorted_conf = torch.sort(confidence[row][mask_index[row]], descending=True)[0]
        assert len(sorted_conf) == len(threshs)
        top_i = 0
        for top_i in range(len(threshs)):
            if sorted_conf[top_i] < threshs[top_i]:
                break
        if top_i == 0 or top_i == len(threshs) - 1:
            top_i += 1
        _, idx = torch.topk(confidence[row], k=top_i)
        transfer[row, idx] = True
    return transfer


@torch.no_grad()
def ref_fast_dllm_generate(model, prompt: torch.Tensor, steps: int = 128, gen_length: int = 128,
                           block_length: int = 128, temperature: float = 0.0, remasking: str = "low_confidence",
                           mask_id: int = 126336, threshold: float | None = None, factor: float | None = None,
                           max_nfe: int = 10_000):
    """Fast-dLLM's no-cache `generate`. `model(x, attention_mask) -> logits` (called without a mask).

    Returns (x [B, P + G], nfe, commits) where commits lists the number of tokens committed per forward
    (summed over rows). `max_nfe` only guards the test suite against an endless loop.
    """
    counting = CountingModel(model)
    B, P = prompt.shape
    x = torch.full((B, P + gen_length), mask_id, dtype=torch.long)
    x[:, :P] = prompt
    assert gen_length % block_length == 0
    num_blocks = gen_length // block_length
    assert steps % num_blocks == 0
    steps_per_block = steps // num_blocks
    commits: list[int] = []

    for nb in range(num_blocks):
        start, end = P + nb * block_length, P + (nb + 1) * block_length
        num_transfer = ref_get_num_transfer_tokens(x[:, start:end] == mask_id, steps_per_block)
        i = 0
        while True:
            assert counting.calls < max_nfe, "reference decode did not terminate"
            mask_index = x == mask_id
            logits = counting(x, None)
            mask_index[:, end:] = False
            x0, confidence = _fast_confidence(logits, temperature, remasking, mask_index, x)
            if factor is not None:
                transfer = ref_transfer_factor(confidence, mask_index, factor)
            elif threshold is not None:
                transfer = ref_transfer_threshold(confidence, mask_index, threshold)
            else:
                transfer = ref_transfer_quota(confidence, num_transfer[:, i])
            x[transfer] = x0[transfer]
            commits.append(int(transfer.sum()))
            i += 1
            if int((x[:, start:end] == mask_id).sum()) == 0:
                break
    return x, counting.calls, commits


# --------------------------------------------------------------------------------------------------
# (d) Fast-dLLM's KV caches: the cached LLaDA forward and generate_with_prefix_cache / _dual_cache
# --------------------------------------------------------------------------------------------------

class RefCachedLLaDA:
    """Fast-dLLM's cached LLaDA forward (`llada/model/modeling_llada.py` as shipped with Fast-dLLM):

    * `present` keys are cached *before* RoPE; each forward rotates all keys at positions 0..key_len-1;
    * without `replace_position` (prefix cache) keys are cat(past, fed) and queries sit at the last
      query_len positions; with it (dual cache) the fed keys/values are written into the past tensors in
      place at the flagged positions, keys are the whole past, and queries sit at
      [max_replace_pos - query_len, max_replace_pos);
    * attention has no mask (batch 1, no padding). Weights are read by the published parameter names.
    Returns (logits, past) where past is a list over layers of (k, v), [B, n_kv, len, hd], pre-RoPE.
    """

    def __init__(self, model):
        self.W, self.cfg = {k: v for k, v in model.state_dict().items()}, model.config
        self.calls = 0

    def _rope(self, t, positions):
        hd = t.shape[-1]
        inv = 1.0 / (self.cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
        ang = positions.float()[:, None] * inv[None]
        ang = torch.cat((ang, ang), -1)
        t32 = t.float()
        return (t32 * ang.cos() + ref_rotate_half(t32) * ang.sin()).to(t.dtype)

    @torch.no_grad()
    def __call__(self, x, past=None, replace_position=None):
        self.calls += 1
        W, c = self.W, self.cfg
        d, nh = c.d_model, c.n_heads
        nkv = c.n_kv_heads if c.n_kv_heads is not None else nh
        hd = d // nh
        B, T = x.shape
        h_all = W[PREFIX + "wte.weight"][x]
        presents = []
        for layer in range(c.n_layers):
            p = f"{PREFIX}blocks.{layer}."
            h = ref_rms_norm(h_all, W[p + "attn_norm.weight"], c.rms_norm_eps)
            q = (h @ W[p + "q_proj.weight"].T).view(B, T, nh, hd).transpose(1, 2)
            k = (h @ W[p + "k_proj.weight"].T).view(B, T, nkv, hd).transpose(1, 2)
            v = (h @ W[p + "v_proj.weight"].T).view(B, T, nkv, hd).transpose(1, 2)
            if past is not None:
                pk, pv = past[layer]
                if replace_position is None:
                    k, v = torch.cat((pk, k), 2), torch.cat((pv, v), 2)
                else:
                    for b in range(B):
                        idx = replace_position[b].nonzero(as_tuple=True)[0]
                        pk[b, :, idx] = k[b, :, :len(idx)]
                        pv[b, :, idx] = v[b, :, :len(idx)]
                    k, v = pk, pv
            presents.append((k, v))
            key_len = k.shape[2]
            if replace_position is None:
                q_pos = torch.arange(key_len - T, key_len)
            else:
                top = int(replace_position.nonzero(as_tuple=True)[1].max()) + 1
                q_pos = torch.arange(top - T, top)
            q, k = self._rope(q, q_pos), self._rope(k, torch.arange(key_len))
            if nkv != nh:
                k, v = k.repeat_interleave(nh // nkv, 1), v.repeat_interleave(nh // nkv, 1)
            att = F.scaled_dot_product_attention(q, k, v, is_causal=False)
            h_all = h_all + att.transpose(1, 2).reshape(B, T, d) @ W[p + "attn_out.weight"].T
            h = ref_rms_norm(h_all, W[p + "ff_norm.weight"], c.rms_norm_eps)
            h_all = h_all + (F.silu(h @ W[p + "ff_proj.weight"].T) * (h @ W[p + "up_proj.weight"].T)) \
                @ W[p + "ff_out.weight"].T
        h_all = ref_rms_norm(h_all, W[PREFIX + "ln_f.weight"], c.rms_norm_eps)
        head = W[PREFIX + "wte.weight"] if c.weight_tying else W[PREFIX + "ff_out.weight"]
        return h_all @ head.T, presents


def _transfer(logits, x, mask_index, threshold, factor, num_transfer):
    x0, confidence = _fast_confidence(logits, 0.0, "low_confidence", mask_index, x)
    if factor is not None:
        return x0, ref_transfer_factor(confidence, mask_index, factor)
    if threshold is not None:
        return x0, ref_transfer_threshold(confidence, mask_index, threshold)
    return x0, ref_transfer_quota(confidence, num_transfer)


@torch.no_grad()
def ref_generate_with_cache(model, prompt, mode: str, steps: int = 128, gen_length: int = 128,
                            block_length: int = 128, mask_id: int = 126336, threshold: float | None = None,
                            factor: float | None = None):
    """Fast-dLLM's `generate_with_prefix_cache` (mode "prefix") and `generate_with_dual_cache` ("dual"),
    temperature 0: a full forward opens each block and commits; the block's later steps feed x[:, start:]
    against the prefix cache, or x[:, start:end] against the whole cache with the block replaced.
    Returns (x, nfe, commits)."""
    net = RefCachedLLaDA(model)
    B, P = prompt.shape
    x = torch.full((B, P + gen_length), mask_id, dtype=torch.long)
    x[:, :P] = prompt
    num_blocks = gen_length // block_length
    steps_per_block = steps // num_blocks
    commits = []
    for nb in range(num_blocks):
        start, end = P + nb * block_length, P + (nb + 1) * block_length
        num_transfer = ref_get_num_transfer_tokens(x[:, start:end] == mask_id, steps_per_block)
        logits, past = net(x)
        mask_index = x == mask_id
        mask_index[:, end:] = False
        x0, transfer = _transfer(logits, x, mask_index, threshold, factor, num_transfer[:, 0])
        x[transfer] = x0[transfer]
        commits.append(int(transfer.sum()))
        if mode == "prefix":
            past = [(k[:, :, :start], v[:, :, :start]) for k, v in past]
        replace = torch.zeros_like(x, dtype=torch.bool)
        replace[:, start:end] = True
        i = 1
        while (x[:, start:end] == mask_id).any():
            if mode == "prefix":
                mask_index = x[:, start:] == mask_id
                mask_index[:, block_length:] = False
                logits, _ = net(x[:, start:], past)
                view = x[:, start:]
            else:
                mask_index = x[:, start:end] == mask_id
                logits, _ = net(x[:, start:end], past, replace)
                view = x[:, start:end]
            x0, transfer = _transfer(logits, view, mask_index, threshold, factor, num_transfer[:, i])
            view[transfer] = x0[transfer]
            commits.append(int(transfer.sum()))
            i += 1
    return x, net.calls, commits


# --------------------------------------------------------------------------------------------------
# (e) Dream: the published modeling (Qwen2-style, bidirectional) and diffusion_generate's sampler
# --------------------------------------------------------------------------------------------------

DREAM_LAYER_PARAMS = ("self_attn.q_proj.weight", "self_attn.q_proj.bias", "self_attn.k_proj.weight",
                      "self_attn.k_proj.bias", "self_attn.v_proj.weight", "self_attn.v_proj.bias",
                      "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
                      "mlp.down_proj.weight", "input_layernorm.weight", "post_attention_layernorm.weight")


def dream_param_names(n_layers: int) -> list[str]:
    names = ["model.embed_tokens.weight"]
    for i in range(n_layers):
        names += [f"model.layers.{i}.{p}" for p in DREAM_LAYER_PARAMS]
    return names + ["model.norm.weight", "lm_head.weight"]


def dream_padding(attention_mask: torch.Tensor):
    """diffusion_generate's position ids and 4-D mask for a left-padded batch ((None, None): no padding)."""
    if attention_mask is None or not bool((attention_mask == 0).any()):
        return None, None
    tok_idx = attention_mask.long().cumsum(-1) - 1
    tok_idx.masked_fill_(attention_mask == 0, 1)
    am = attention_mask.bool()
    return tok_idx, torch.logical_and(am[:, None, None, :], am[:, None, :, None])


def _dream_proj(W, name, h, heads, hd):
    B, T, _ = h.shape
    return (h @ W[name + ".weight"].T + W[name + ".bias"]).view(B, T, heads, hd).transpose(1, 2)


def ref_dream_forward(state_dict: dict, config, input_ids, attention_mask=None, position_ids=None):
    """Logits [B, T, V] as the published DreamModel computes them (no shift inside the model):
    RMSNorm in float32 with the weight after the cast back; RoPE tables float32 cast to the dtype and
    applied in it; biased q/k/v; repeat_kv; softmax(q k^T / sqrt(d) masked by the 4-D mask) v. Padded
    query rows are fully masked: zeros, as torch's SDPA returns for them (nothing reads them)."""
    W, c = state_dict, config
    nh, nkv = c.num_attention_heads, c.num_key_value_heads
    hd = c.hidden_size // nh
    B, T = input_ids.shape
    tok_idx, mask4 = dream_padding(attention_mask)
    if position_ids is None:
        position_ids = tok_idx if tok_idx is not None else torch.arange(T)[None].expand(B, T)
    x = W["model.embed_tokens.weight"][input_ids]
    inv = 1.0 / (c.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    freqs = (inv[None, :, None].float() @ position_ids[:, None, :].float()).transpose(1, 2)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos().to(x.dtype)[:, None], emb.sin().to(x.dtype)[:, None]
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        h = ref_rms_norm(x, W[p + "input_layernorm.weight"], c.rms_norm_eps)
        q, k, v = (_dream_proj(W, p + name, h, heads, hd)
                   for name, heads in (("self_attn.q_proj", nh), ("self_attn.k_proj", nkv), ("self_attn.v_proj", nkv)))
        q = q * cos + ref_rotate_half(q) * sin
        k = k * cos + ref_rotate_half(k) * sin
        k = k[:, :, None].expand(B, nkv, nh // nkv, T, hd).reshape(B, nh, T, hd)
        v = v[:, :, None].expand(B, nkv, nh // nkv, T, hd).reshape(B, nh, T, hd)
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
        if mask4 is not None:
            scores = scores.masked_fill(~mask4, float("-inf"))
        att = torch.softmax(scores, dim=-1).nan_to_num(0.0) @ v
        x = x + att.transpose(1, 2).reshape(B, T, -1) @ W[p + "self_attn.o_proj.weight"].T
        h = ref_rms_norm(x, W[p + "post_attention_layernorm.weight"], c.rms_norm_eps)
        x = x + (F.silu(h @ W[p + "mlp.gate_proj.weight"].T) * (h @ W[p + "mlp.up_proj.weight"].T)) \
            @ W[p + "mlp.down_proj.weight"].T
    x = ref_rms_norm(x, W["model.norm.weight"], c.rms_norm_eps)
    return x @ W["lm_head.weight"].T


def _dream_filter(logits, top_p, top_k):
    if top_p is not None and top_p < 1:
        sorted_logits, sorted_idx = torch.sort(logits, descending=True)
        cum = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
        remove = cum > top_p
        remove[..., 1:] = remove[..., :-1].clone()
        remove[..., 0] = 0
        mask = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, sorted_idx, remove)
        logits = logits.masked_fill(mask, torch.finfo(logits.dtype).min)
    if top_k is not None:
        top_k = min(top_k, logits.size(-1))
        logits = logits.masked_fill(logits < torch.topk(logits, top_k)[0][..., -1, None], torch.finfo(logits.dtype).min)
    return logits


def ref_dream_sample_tokens(logits, temperature=0.0, top_p=None, top_k=None, margin_confidence=False,
                            neg_entropy=False):
    if temperature > 0:
        logits = logits / temperature
    logits = _dream_filter(logits, top_p, top_k)
    probs = torch.softmax(logits, dim=-1)
    if temperature > 0:
        x0 = torch.distributions.Categorical(probs=probs).sample()
        confidence = torch.gather(probs, -1, x0.unsqueeze(-1)).squeeze(-1)
    else:
        confidence, x0 = probs.max(dim=-1)
    if margin_confidence:
        sorted_probs, _ = torch.sort(probs, dim=-1, descending=True)
        confidence = sorted_probs[:, 0] - sorted_probs[:, 1]
    if neg_entropy:
        confidence = torch.sum(probs * torch.log(probs + 1e-10), dim=-1)
    return confidence, x0


@torch.no_grad()
def ref_diffusion_generate(logits_fn, input_ids, attention_mask, max_new_tokens, steps, mask_id, alg="origin",
                           alg_temp=None, temperature=0.0, top_p=None, top_k=None, eps=1e-3):
    """Dream's `diffusion_generate` / `_sample` (whole region, no blocks). `logits_fn(x, attention_mask,
    position_ids)` returns raw model logits; they are shifted here, as the published sampler does.
    Returns (x, forwards that still had a masked position: the published loop runs all `steps`)."""
    B, P = input_ids.shape
    x = F.pad(input_ids, (0, max_new_tokens), value=mask_id)
    am = F.pad(attention_mask, (0, max_new_tokens), value=1) if attention_mask is not None else None
    tok_idx, _ = dream_padding(am)
    if tok_idx is None:
        am = None
    timesteps = torch.linspace(1, eps, steps + 1)
    forwards = 0
    for i in range(steps):
        mask_index = x == mask_id
        logits = logits_fn(x, am, tok_idx)
        forwards += int(bool(mask_index.any()))
        logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        mask_logits = logits[mask_index]
        t, s = timesteps[i], timesteps[i + 1]
        if alg == "origin":
            p_transfer = 1 - s / t if i < steps - 1 else 1
            x0 = torch.zeros_like(x[mask_index], dtype=torch.long) + mask_id
            transfer = torch.rand(*x0.shape) < p_transfer
            _, x0[transfer] = ref_dream_sample_tokens(mask_logits[transfer], temperature, top_p, top_k)
            x[mask_index] = x0.clone()
        else:
            confidence, x0 = ref_dream_sample_tokens(mask_logits, temperature, top_p, top_k,
                                                     margin_confidence=alg == "topk_margin",
                                                     neg_entropy=alg == "entropy")
            num_mask_token = mask_index.sum() / mask_index.shape[0]
            n = int(num_mask_token * (1 - s / t)) if i < steps - 1 else int(num_mask_token)
            full = torch.full_like(x, -torch.inf, device=x.device, dtype=logits.dtype)
            full[mask_index] = confidence
            if n > 0:
                if alg_temp is None or alg_temp == 0:
                    _, transfer_index = torch.topk(full, n)
                else:
                    full = F.softmax(full / alg_temp, dim=-1)
                    transfer_index = torch.multinomial(full, num_samples=n)
                x_ = torch.zeros_like(x, dtype=torch.long) + mask_id
                x_[mask_index] = x0.clone()
                rows = torch.arange(x.size(0)).unsqueeze(1).expand_as(transfer_index)
                x[rows, transfer_index] = x_[rows, transfer_index]
    return x, forwards
