"""Pass-aware layers and time-folding helpers."""
from .conv import Conv2d
from .rate_norm import RateBatchNorm2d
from .time import fold, time_mean, unfold

__all__ = ["Conv2d", "RateBatchNorm2d", "fold", "time_mean", "unfold"]
