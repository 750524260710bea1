"""Pass-aware layers and time-folding helpers."""
from .rate_norm import RateBatchNorm2d
from .time import fold, time_mean, unfold

__all__ = ["RateBatchNorm2d", "fold", "time_mean", "unfold"]
