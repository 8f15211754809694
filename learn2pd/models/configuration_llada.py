"""LLaDA configuration, field names as in the published LLaDA checkpoints' config.json."""

from __future__ import annotations

from transformers import PretrainedConfig


class LLaDAConfig(PretrainedConfig):
    """Config of the LLaDA masked-diffusion transformer.

    Field names follow the published `config.json` of GSAI-ML/LLaDA-8B-* (OLMo-style names), so a
    downloaded checkpoint folder loads with this class directly. Unknown extra fields are kept.
    """

    model_type = "llada"

    def __init__(
        self,
        d_model: int = 4096,
        n_heads: int = 32,
        n_kv_heads: int | None = None,
        n_layers: int = 32,
        mlp_hidden_size: int | None = 12288,
        mlp_ratio: int = 4,
        vocab_size: int = 126464,
        embedding_size: int | None = 126464,
        max_sequence_length: int = 4096,
        rope_theta: float = 500000.0,
        rms_norm_eps: float = 1e-5,
        weight_tying: bool = False,
        include_bias: bool = False,
        include_qkv_bias: bool = False,
        mask_token_id: int = 126336,
        eos_token_id: int = 126081,
        pad_token_id: int = 126081,
        eot_token_id: int | None = 126348,
        init_std: float = 0.02,
        **kwargs,
    ):
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads if n_kv_heads is not None else n_heads
        self.n_layers = n_layers
        self.mlp_hidden_size = mlp_hidden_size if mlp_hidden_size is not None else mlp_ratio * d_model
        self.mlp_ratio = mlp_ratio
        self.vocab_size = vocab_size
        self.embedding_size = embedding_size if embedding_size is not None else vocab_size
        self.max_sequence_length = max_sequence_length
        self.rope_theta = rope_theta
        self.rms_norm_eps = rms_norm_eps
        self.weight_tying = weight_tying
        self.include_bias = include_bias
        self.include_qkv_bias = include_qkv_bias
        self.mask_token_id = mask_token_id
        self.eot_token_id = eot_token_id
        self.init_std = init_std
        if d_model % n_heads:
            raise ValueError(f"LLaDAConfig: d_model={d_model} must be divisible by n_heads={n_heads}")
        if n_heads % self.n_kv_heads:
            raise ValueError(f"LLaDAConfig: n_heads={n_heads} must be a multiple of n_kv_heads={self.n_kv_heads}")
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(eos_token_id=eos_token_id, pad_token_id=pad_token_id, **kwargs)

    # transformers-style aliases, so generic code (sizes, device maps) can read them.
    @property
    def hidden_size(self) -> int:
        return self.d_model

    @property
    def num_attention_heads(self) -> int:
        return self.n_heads

    @property
    def num_hidden_layers(self) -> int:
        return self.n_layers
