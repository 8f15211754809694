"""Our native LLaDA model against a plain re-implementation of the public modeling_llada.py."""

from __future__ import annotations

import json

import pytest
import torch
from reference_impl import (
    PREFIX,
    published_param_names,
    ref_apply_rope,
    ref_forward,
    ref_rope_tables,
)
from safetensors import safe_open
from safetensors.torch import save_file

from learn2pd.models import LLaDAConfig, LLaDAModelLM
from learn2pd.models.loading import load_model
from learn2pd.models.modeling_llada import RotaryEmbedding
from learn2pd.models.tokenizer import build_char_tokenizer

VOCAB = 58  # the char tokenizer's size
ATOL = RTOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(**overrides) -> LLaDAConfig:
    base = dict(d_model=64, n_heads=4, n_kv_heads=None, n_layers=2, mlp_hidden_size=96, vocab_size=VOCAB,
                embedding_size=VOCAB, max_sequence_length=128, rope_theta=10000.0, mask_token_id=0,
                eos_token_id=1, pad_token_id=1, eot_token_id=None, init_std=0.2)
    base.update(overrides)
    return LLaDAConfig(**base)


def random_model(cfg: LLaDAConfig, seed: int = 0) -> LLaDAModelLM:
    """Random weights everywhere, norm weights included (they init to ones, which would hide a bug)."""
    torch.manual_seed(seed)
    model = LLaDAModelLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
    return model


def read_safetensors(folder) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as fh:
            for k in fh.keys():
                out[k] = fh.get_tensor(k)
    return out


def save_folder(model: LLaDAModelLM, path) -> None:
    model.save_pretrained(path)
    build_char_tokenizer().save_pretrained(path)


def inputs(seed: int = 0, B: int = 3, T: int = 24):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (B, T), generator=g)
    ids[:, T // 2:] = 0  # a masked tail, as during decoding
    ids[0, T - 3] = 17  # and a committed token among the masks
    return ids


def left_pad_mask(B: int, T: int, pads: list[int]) -> torch.Tensor:
    mask = torch.ones(B, T, dtype=torch.long)
    for b, p in enumerate(pads):
        mask[b, :p] = 0
    return mask


GQA = [pytest.param(None, id="mha"), pytest.param(2, id="gqa2"), pytest.param(1, id="mqa")]


@pytest.mark.parametrize("n_kv_heads", GQA)
def test_state_dict_names_are_the_published_ones(tmp_path, n_kv_heads):
    cfg = tiny_config(n_kv_heads=n_kv_heads)
    model = random_model(cfg)
    expected = published_param_names(cfg.n_layers)
    assert list(model.state_dict().keys()) == expected
    save_folder(model, tmp_path)
    saved = read_safetensors(tmp_path)
    assert sorted(saved) == sorted(expected)
    d, hd, kv = cfg.d_model, cfg.d_model // cfg.n_heads, cfg.n_kv_heads
    shapes = {"wte.weight": (VOCAB, d), "ln_f.weight": (d,), "ff_out.weight": (VOCAB, d)}
    block = {"attn_norm": (d,), "ff_norm": (d,), "q_proj": (d, d), "k_proj": (kv * hd, d), "v_proj": (kv * hd, d),
             "attn_out": (d, d), "ff_proj": (96, d), "up_proj": (96, d), "ff_out": (d, 96)}
    for name, shape in shapes.items():
        assert tuple(saved[PREFIX + name].shape) == shape, name
    for i in range(cfg.n_layers):
        for name, shape in block.items():
            assert tuple(saved[f"{PREFIX}blocks.{i}.{name}.weight"].shape) == shape, name
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "llada"
    assert config["architectures"] == ["LLaDAModelLM"]
    for key in ("d_model", "n_heads", "n_kv_heads", "n_layers", "mlp_hidden_size", "rope_theta", "rms_norm_eps",
                "mask_token_id", "embedding_size", "weight_tying"):
        assert key in config, key


def test_rotary_matches_reference():
    head_dim, T = 16, 20
    g = torch.Generator().manual_seed(3)
    q = torch.randn(2, 3, T, head_dim, generator=g)
    k = torch.randn(2, 1, T, head_dim, generator=g)
    rq, rk = RotaryEmbedding(head_dim, 10000.0)(q, k, torch.arange(T))
    sin, cos = ref_rope_tables(T, head_dim, 10000.0)
    for b in range(2):
        for h in range(3):
            torch.testing.assert_close(rq[b, h], ref_apply_rope(q[b, h], sin, cos), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(rk[b, 0], ref_apply_rope(k[b, 0], sin, cos), atol=1e-6, rtol=1e-6)
    # the rotation is not the identity here (so the comparison means something)
    assert (rq - q).abs().max() > 0.1


def test_rope_tables_stay_float32_under_a_bf16_model(tmp_path):
    """The reference keeps its RoPE tables in float32 whatever the model dtype; casting or loading the model
    in bf16 must not round the frequencies (at position 63 a bf16 frequency is off by ~1e-2 rad)."""
    cfg = tiny_config(max_sequence_length=64)
    save_folder(random_model(cfg, seed=11), tmp_path)
    T, hd = 64, cfg.d_model // cfg.n_heads
    g = torch.Generator().manual_seed(12)
    q, k = torch.randn(1, 2, T, hd, generator=g), torch.randn(1, 2, T, hd, generator=g)
    sin, cos = ref_rope_tables(T, hd, cfg.rope_theta)
    cast = random_model(cfg, seed=11).to(torch.bfloat16)
    loaded, _, _ = load_model(tmp_path, dtype="bfloat16")
    for model in (cast, loaded):
        rq, rk = model.model.rotary(q, k, torch.arange(T))  # float32 inputs: only the tables matter
        for h in range(2):
            torch.testing.assert_close(rq[0, h], ref_apply_rope(q[0, h], sin, cos), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(rk[0, h], ref_apply_rope(k[0, h], sin, cos), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n_kv_heads", GQA)
def test_reloaded_logits_match_reference(tmp_path, n_kv_heads):
    cfg = tiny_config(n_kv_heads=n_kv_heads)
    original = random_model(cfg, seed=1)
    save_folder(original, tmp_path)
    weights = read_safetensors(tmp_path)  # the reference reads the checkpoint by name, not our module

    reloaded = LLaDAModelLM.from_pretrained(tmp_path).eval()
    loaded, tokenizer, spec = load_model(tmp_path, dtype="float32")
    assert spec.mask_id == 0 and spec.eos_id == 1 and spec.context_length == 128
    assert tokenizer.mask_token_id == 0

    ids = inputs(seed=2)
    ref = ref_forward(weights, cfg, ids)
    assert ref.abs().max() > 1.0  # logits of a sensible scale, so atol=1e-5 is a real bound
    with torch.no_grad():
        for model in (original, reloaded, loaded):
            out = model(ids).logits
            assert out.dtype == torch.float32 and out.shape == (3, 24, VOCAB)
            torch.testing.assert_close(out, ref, atol=ATOL, rtol=RTOL)
        # an all-ones mask is the same as no mask
        torch.testing.assert_close(loaded(ids, attention_mask=torch.ones_like(ids)).logits, ref,
                                   atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("n_kv_heads", GQA)
def test_left_padding_mask_matches_reference(tmp_path, n_kv_heads):
    cfg = tiny_config(n_kv_heads=n_kv_heads)
    save_folder(random_model(cfg, seed=4), tmp_path)
    weights = read_safetensors(tmp_path)
    model, _, _ = load_model(tmp_path)
    ids = inputs(seed=5)
    pads = [0, 3, 7]
    mask = left_pad_mask(3, ids.shape[1], pads)
    ids = ids.masked_fill(mask == 0, 1)  # pad token = EOS, as LLaDA pads

    ref = ref_forward(weights, cfg, ids, attention_mask=mask)
    with torch.no_grad():
        out = model(ids, attention_mask=mask).logits
        unmasked = model(ids).logits
    keep = mask.bool()  # compare only the real (non-pad) query rows
    torch.testing.assert_close(out[keep], ref[keep], atol=ATOL, rtol=RTOL)
    # the mask changes the padded rows (otherwise this test would be vacuous) and not the unpadded one
    assert (out[1][keep[1]] - unmasked[1][keep[1]]).abs().max() > 1e-2
    torch.testing.assert_close(out[0], unmasked[0], atol=ATOL, rtol=RTOL)
    # RoPE is relative, so a left-padded row equals the same tokens alone without padding
    for b, p in enumerate(pads):
        with torch.no_grad():
            alone = model(ids[b:b + 1, p:]).logits[0]
        torch.testing.assert_close(out[b, p:], alone, atol=1e-4, rtol=1e-4)


def published_style_folder(path, n_kv_heads: int, seed: int = 7) -> tuple[dict, LLaDAConfig]:
    """A checkpoint folder written the way the published one is: its config.json fields and a safetensors
    file whose tensors are created by name here, without our model class."""
    d, n_heads, n_layers, mlp = 64, 4, 2, 80
    hd = d // n_heads
    config = {
        "activation_type": "silu", "alibi": False, "alibi_bias_max": 8.0, "architectures": ["LLaDAModelLM"],
        "attention_dropout": 0.0, "attention_layer_norm": False, "attention_layer_norm_with_affine": True,
        "auto_map": {"AutoConfig": "configuration_llada.LLaDAConfig",
                     "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
                     "AutoModel": "modeling_llada.LLaDAModelLM"},
        "bias_for_layer_norm": False, "block_group_size": 1, "block_type": "llama", "d_model": d,
        "embedding_dropout": 0.0, "embedding_size": VOCAB, "eos_token_id": 1, "flash_attention": False,
        "include_bias": False, "include_qkv_bias": False, "init_cutoff_factor": None, "init_device": "meta",
        "init_fn": "mitchell", "init_std": 0.02, "input_emb_norm": False, "layer_norm_type": "rms",
        "layer_norm_with_affine": True, "mask_token_id": 0, "max_sequence_length": 64, "mlp_hidden_size": mlp,
        "mlp_ratio": 4, "model_type": "llada", "multi_query_attention": None, "n_heads": n_heads,
        "n_kv_heads": n_kv_heads, "n_layers": n_layers, "pad_token_id": 1, "precision": "amp_bf16",
        "residual_dropout": 0.0, "rms_norm_eps": 1e-05, "rope": True, "rope_full_precision": True,
        "rope_theta": 500000.0, "scale_logits": False, "transformers_version": "4.46.3", "use_cache": False,
        "vocab_size": VOCAB, "weight_tying": False,
    }
    g = torch.Generator().manual_seed(seed)
    shapes = {"wte.weight": (VOCAB, d), "ln_f.weight": (d,), "ff_out.weight": (VOCAB, d)}
    for i in range(n_layers):
        shapes.update({f"blocks.{i}.attn_norm.weight": (d,), f"blocks.{i}.ff_norm.weight": (d,),
                       f"blocks.{i}.q_proj.weight": (d, d), f"blocks.{i}.k_proj.weight": (n_kv_heads * hd, d),
                       f"blocks.{i}.v_proj.weight": (n_kv_heads * hd, d), f"blocks.{i}.attn_out.weight": (d, d),
                       f"blocks.{i}.ff_proj.weight": (mlp, d), f"blocks.{i}.up_proj.weight": (mlp, d),
                       f"blocks.{i}.ff_out.weight": (d, mlp)})
    weights = {}
    for name, shape in shapes.items():
        t = torch.randn(shape, generator=g)
        weights[PREFIX + name] = (1.0 + 0.3 * t) if "norm" in name else 0.2 * t
    assert sorted(weights) == sorted(published_param_names(n_layers))
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config, indent=2))
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
    build_char_tokenizer().save_pretrained(path)
    return weights, LLaDAConfig(**{k: v for k, v in config.items() if k not in ("architectures", "auto_map")})


@pytest.mark.parametrize("n_kv_heads", [4, 2])
def test_published_style_checkpoint_loads_every_weight(tmp_path, n_kv_heads):
    weights, cfg = published_style_folder(tmp_path / "ckpt", n_kv_heads)
    model, info = LLaDAModelLM.from_pretrained(tmp_path / "ckpt", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    loaded, _, spec = load_model(tmp_path / "ckpt")
    assert spec.family == "llada" and spec.mask_id == 0 and spec.context_length == 64
    sd = loaded.state_dict()
    for name, w in weights.items():
        assert torch.equal(sd[name], w), name
    ids = inputs(seed=8, B=2, T=20)
    mask = left_pad_mask(2, 20, [0, 5])
    ref = ref_forward(weights, cfg, ids)
    ref_masked = ref_forward(weights, cfg, ids, attention_mask=mask)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, ref, atol=ATOL, rtol=RTOL)
        out = loaded(ids, attention_mask=mask).logits
    torch.testing.assert_close(out[mask.bool()], ref_masked[mask.bool()], atol=ATOL, rtol=RTOL)


def test_bf16_forward_close_to_fp32(tmp_path):
    cfg = tiny_config(n_kv_heads=2)
    save_folder(random_model(cfg, seed=9), tmp_path)
    weights = read_safetensors(tmp_path)
    fp32, _, _ = load_model(tmp_path, dtype="float32")
    bf16, _, _ = load_model(tmp_path, dtype="bfloat16")
    assert next(bf16.parameters()).dtype == torch.bfloat16
    ids = inputs(seed=10)
    mask = left_pad_mask(3, ids.shape[1], [0, 2, 5])
    with torch.no_grad():
        for m in (None, mask):
            lo = bf16(ids, attention_mask=m).logits
            hi = fp32(ids, attention_mask=m).logits
            assert lo.dtype == torch.bfloat16 and torch.isfinite(lo).all()
            keep = torch.ones_like(ids, dtype=torch.bool) if m is None else m.bool()
            lo, hi = lo.float()[keep], hi[keep]
            ref = ref_forward(weights, cfg, ids, attention_mask=m)[keep]
            torch.testing.assert_close(hi, ref, atol=ATOL, rtol=RTOL)
            scale = hi.abs().max()
            assert (lo - hi).abs().max() < 0.05 * scale
            assert (lo.argmax(-1) == hi.argmax(-1)).float().mean() > 0.9
            cos = torch.nn.functional.cosine_similarity(lo, hi, dim=-1)
            assert cos.min() > 0.99


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_equals_the_reference_formula_bitwise(dtype):
    """RMSNorm uses the fused F.rms_norm; under both dtypes it must give exactly the reference's result."""
    from reference_impl import ref_rms_norm

    from learn2pd.models.modeling_llada import RMSNorm

    g = torch.Generator().manual_seed(5)
    norm = RMSNorm(48, 1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(48, generator=g) + 0.5)
    norm = norm.to(dtype)
    x = (torch.randn(3, 7, 48, generator=g) * 3).to(dtype)
    with torch.no_grad():
        assert torch.equal(norm(x), ref_rms_norm(x, norm.weight, 1e-5))
