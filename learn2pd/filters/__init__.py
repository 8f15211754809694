"""Learned decoding filters (Learn2PD) and the End-of-Text predictor."""

from learn2pd.filters.features import FEATURES, block_features
from learn2pd.filters.models import EoTPredictor, FilterConfig, Learn2PDFilter, PositionwiseFilter, load_filter

__all__ = ["FEATURES", "EoTPredictor", "FilterConfig", "Learn2PDFilter", "PositionwiseFilter", "block_features",
           "load_filter"]
