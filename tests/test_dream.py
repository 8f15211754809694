"""Dream as a first-class family: the native model equals the published modeling (single rows and
left-padded batches), loads from a folder without remote code, and Dream's decoding algorithms equal
`diffusion_generate` token for token."""

import json

import pytest
import torch
from reference_impl import dream_param_names, ref_diffusion_generate, ref_dream_forward

from learn2pd.decoding.config import DecodeConfig
from learn2pd.decoding.engine import decode
from learn2pd.models.configuration_dream import DreamConfig
from learn2pd.models.modeling_dream import DreamModel
from learn2pd.models.spec import ModelSpec

VOCAB, MASK, EOS = 48, 0, 1
SPEC = ModelSpec("dream", MASK, EOS, EOS, (EOS,), (5,), logit_shift=True)

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(**kw):
    base = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=256, rope_theta=10000.0, mask_token_id=MASK,
                pad_token_id=EOS, eos_token_id=EOS, initializer_range=0.5)
    return DreamConfig(**(base | kw))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(7)
    m = DreamModel(tiny_config()).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("bias"):
                p.normal_(std=0.1)  # biases are zero at init: give them values so they are tested
        m.lm_head.weight[MASK].zero_()  # never predicts the mask token (as a trained model)
    return m


def test_state_dict_names_are_the_published_ones(model):
    assert sorted(model.state_dict()) == sorted(dream_param_names(2))


def test_logits_equal_the_published_modeling(model):
    m = model
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, VOCAB, (3, 11), generator=g)
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[1, :4] = 0  # left padding, as diffusion_generate sees it
    mask[2, :7] = 0
    sd = {k: v for k, v in m.state_dict().items()}
    tol = dict(atol=1e-4, rtol=1e-4)  # float32; the reference writes attention out by hand
    with torch.no_grad():
        ours = m(ids, attention_mask=mask).logits
        ref = ref_dream_forward(sd, m.config, ids, mask)
        single = m(ids[:1]).logits
    real = mask.bool()
    torch.testing.assert_close(ours[real].float(), ref[real].float(), **tol)
    torch.testing.assert_close(single.float(), ref_dream_forward(sd, m.config, ids[:1]).float(), **tol)
    # Dream's positions count real tokens: a left-padded row computes what the row alone computes
    with torch.no_grad():
        torch.testing.assert_close(ours[1, 4:], m(ids[1:2, 4:]).logits[0], **tol)


def _decode(model, prompt_ids, mask, plan, **cfg):
    return decode(model, SPEC, prompt_ids, mask, plan, DecodeConfig(**cfg))


def _ref(model, ids, mask, gen, steps, alg, **kw):
    fn = lambda x, am, pos: model(x, attention_mask=am, position_ids=pos).logits  # noqa: E731
    return ref_diffusion_generate(fn, ids, mask, gen, steps, MASK, alg=alg, **kw)


@pytest.mark.parametrize("alg", ["maskgit_plus", "topk_margin", "entropy"])
@pytest.mark.parametrize("steps", [32, 12])
def test_confidence_algorithms_equal_diffusion_generate(model, alg, steps):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(2, VOCAB, (3, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    mask[2, :5] = 0
    want, forwards = _ref(model, ids, mask, 32, steps, alg)
    out = _decode(model, ids, mask, alg, gen_length=32, block_length=32, steps=steps)
    assert out.sequences.tolist() == want[:, 7:].tolist()
    assert out.nfe.tolist() == [forwards] * 3
    assert forwards == steps and (out.sequences != MASK).all()


@pytest.mark.parametrize("spec,kw", [("origin", {}), ("maskgit_plus:alg_temp=0.5", dict(alg_temp=0.5)),
                                     ("entropy:top_p=0.9,top_k=8", dict(top_p=0.9, top_k=8))])
def test_seeded_and_filtered_variants_equal_diffusion_generate(model, spec, kw):
    """One row under a fixed seed: Dream draws from the global RNG in the order the policy draws from its
    generator seeded the same (origin's reveal draws, alg_temp's sampling)."""
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(2, VOCAB, (1, 6), generator=g)
    torch.manual_seed(11)
    want, forwards = _ref(model, ids, torch.ones_like(ids), 24, 8, spec.split(":")[0], **kw)
    out = _decode(model, ids, torch.ones_like(ids), spec, gen_length=24, block_length=24, steps=8, seed=11)
    assert out.sequences[0].tolist() == want[0, 6:].tolist() and int(out.nfe[0]) == forwards


def test_every_plan_runs_on_dream_with_caches(model):
    g = torch.Generator().manual_seed(5)
    prompts = [torch.randint(2, VOCAB, (n,), generator=g) for n in (4, 9, 6)]
    ids = torch.full((3, 9), EOS)
    mask = torch.zeros(3, 9, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, 9 - len(p):], mask[i, 9 - len(p):] = p, 1
    for plan in ("vanilla+eotp", "threshold:tau=0.7", "localleap+eotp", "threshold:tau=0.5+adablock:b0=8,tau_d=0.0",
                 "entropy+eotp"):
        for cache in ("none", "prefix", "dual"):
            cfg = dict(gen_length=32, block_length=8, cache=cache)
            batch = _decode(model, ids, mask, plan, **cfg)
            for i, p in enumerate(prompts):
                one = _decode(model, p[None], torch.ones(1, len(p), dtype=torch.long), plan, **cfg)
                assert batch.sequences[i].tolist() == one.sequences[0].tolist(), (plan, cache, i)
                assert int(batch.nfe[i]) == int(one.nfe[0])
            assert not (batch.sequences == MASK).any()


def test_a_folder_loads_natively(tmp_path, model):
    from learn2pd.models.loading import load_model
    from learn2pd.models.tokenizer import build_char_tokenizer

    tok = build_char_tokenizer()
    cfg = tiny_config(vocab_size=len(tok), mask_token_id=tok.mask_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    m = DreamModel(cfg)
    m.save_pretrained(tmp_path / "saved")
    tok.save_pretrained(tmp_path / "saved")
    loaded, _, spec = load_model(tmp_path / "saved")
    assert isinstance(loaded, DreamModel) and spec.family == "dream" and spec.logit_shift
    assert spec.mask_id == tok.mask_token_id and spec.delimiter_ids == (tok.convert_tokens_to_ids("\n"),)
    ids = torch.randint(2, len(tok), (1, 9))
    torch.testing.assert_close(loaded(ids).logits, m(ids).logits)
    # the hub folder's layout: auto_map to remote code, rope_theta, no rope_parameters, bf16
    hub = tmp_path / "hub"
    hub.mkdir()
    raw = json.loads((tmp_path / "saved" / "config.json").read_text())
    raw = {k: v for k, v in raw.items() if k not in ("rope_parameters", "transformers_version")}
    raw |= {"architectures": ["DreamModel"], "rope_theta": 10000.0, "rope_scaling": None, "use_cache": False,
            "use_sliding_window": False, "sliding_window": None, "max_window_layers": 2, "torch_dtype": "bfloat16",
            "auto_map": {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"}}
    (hub / "config.json").write_text(json.dumps(raw))
    for f in (tmp_path / "saved").iterdir():
        if f.name != "config.json":
            (hub / f.name).write_bytes(f.read_bytes())
    loaded, _, _ = load_model(hub)
    assert isinstance(loaded, DreamModel)
    torch.testing.assert_close(loaded(ids).logits, m(ids).logits)
