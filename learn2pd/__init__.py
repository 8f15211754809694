"""learn2pd: learned parallel decoding for masked diffusion language models.

The top-level names load on first use, so `import learn2pd` (and the command line) stays fast.
"""

from learn2pd.version import __version__

_LAZY = {
    "DecodeConfig": "learn2pd.decoding.config",
    "DecodeOutput": "learn2pd.decoding.config",
    "DecodingPlan": "learn2pd.decoding.plan",
    "make_plan": "learn2pd.decoding.plan",
    "generate": "learn2pd.decoding.batching",
    "LearnedPolicy": "learn2pd.decoding.policies.learned",
    "load_model": "learn2pd.models.loading",
}
__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'learn2pd' has no attribute {name!r}")
