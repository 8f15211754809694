"""Dream configuration, field names as in the published Dream checkpoints' config.json (Qwen2-style).

Reads both the folder the published Dream code's `save_pretrained` writes and the hub folder of
Dream-v0-Instruct-7B (with `auto_map` for its remote code, `rope_theta` and no `rope_parameters`);
a `rope_parameters` dict (newer transformers) is read as well. Only default RoPE is supported.
"""

from __future__ import annotations

from transformers import PretrainedConfig


class DreamConfig(PretrainedConfig):
    model_type = "Dream"

    def __init__(
        self,
        vocab_size: int = 151936,
        hidden_size: int = 4096,
        intermediate_size: int = 22016,
        num_hidden_layers: int = 32,
        num_attention_heads: int = 32,
        num_key_value_heads: int | None = 32,
        hidden_act: str = "silu",
        max_position_embeddings: int = 32768,
        initializer_range: float = 0.02,
        rms_norm_eps: float = 1e-6,
        tie_word_embeddings: bool = False,
        rope_theta: float = 10000.0,
        rope_scaling: dict | None = None,
        attention_dropout: float = 0.0,
        mask_token_id: int = 151666,
        pad_token_id: int = 151643,
        **kwargs,
    ):
        rope = kwargs.pop("rope_parameters", None) or {}
        rope_theta = rope.get("rope_theta", rope_theta)
        rope_type = (rope_scaling or {}).get("rope_type", (rope_scaling or {}).get("type", rope.get("rope_type")))
        if rope_type not in (None, "default"):
            raise ValueError(f"DreamConfig: rope scaling {rope_type!r} is not supported (only default RoPE)")
        if hidden_act != "silu":
            raise ValueError(f"DreamConfig: hidden_act {hidden_act!r} is not supported (Dream uses silu)")
        for key in ("use_cache", "use_sliding_window", "sliding_window", "max_window_layers"):
            kwargs.pop(key, None)  # the published config's cache/window switches: unused by a diffusion model
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads if num_key_value_heads is not None else num_attention_heads
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.attention_dropout = attention_dropout
        self.mask_token_id = mask_token_id
        if hidden_size % num_attention_heads:
            raise ValueError(f"DreamConfig: hidden_size={hidden_size} must be divisible by "
                             f"num_attention_heads={num_attention_heads}")
        if num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"DreamConfig: num_attention_heads={num_attention_heads} must be a multiple of "
                             f"num_key_value_heads={self.num_key_value_heads}")
        super().__init__(tie_word_embeddings=tie_word_embeddings, pad_token_id=pad_token_id, **kwargs)
