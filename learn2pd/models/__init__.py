"""dLLM definitions (native LLaDA), the model spec, and loading."""

from learn2pd.models.configuration_llada import LLaDAConfig
from learn2pd.models.modeling_llada import LLaDAModelLM
from learn2pd.models.spec import ModelSpec

__all__ = ["LLaDAConfig", "LLaDAModelLM", "ModelSpec"]
