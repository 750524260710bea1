"""Pass-aware layers and time-folding helpers."""
from .conv import Conv2d
from .rate_norm import RateBatchNorm2d
from .time import add_residual, fold, time_mean, unfold

__all__ = ["Conv2d", "RateBatchNorm2d", "add_residual", "fold", "time_mean", "unfold"]
