"""learn2pd: learned parallel decoding for masked diffusion language models."""

__version__ = "0.1.0"

from learn2pd.decoding.engine import DecodeConfig, DecodeOutput, generate  # noqa: E402
from learn2pd.decoding.policies.learned import LearnedPolicy  # noqa: E402
from learn2pd.models.loading import load_model  # noqa: E402

__all__ = ["DecodeConfig", "DecodeOutput", "LearnedPolicy", "generate", "load_model", "__version__"]
