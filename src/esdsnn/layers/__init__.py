"""The layers of spiking models: pass-aware where the pass matters, plain torch otherwise.

``LIF`` (the neuron), ``Conv2d`` (step-wise in the no-grad passes, reads packed spikes),
``BatchNorm2d``/``BatchNorm1d`` (the rate-aware BatchNorms, also named ``RateBatchNorm2d``/``1d``),
``Dropout`` (one mask per sample over the steps, the same in both RateBP stages), ``conv_bn``
(conv + BatchNorm, normalising in place where it can), ``add_residual``, ``SpikeElementWise`` (SEW
ResNet's ADD / AND / IAND connections), ``time_mean`` and the
fold/unfold helpers. Stateless torch layers (pooling, ``Flatten``, ``Linear``, adds) work on the
folded ``[T·B, ...]`` activations as they are.
"""

from ..neurons.lif import LIF
from ..neurons.spikes import PackedSpikes, pack_spikes, unpack_spikes
from .affine import Affine
from .conv import Conv2d
from .convert import rate_safe_
from .dropout import Dropout
from .rate_norm import RateBatchNorm1d, RateBatchNorm2d, conv_bn
from .sew import SpikeElementWise
from .time import add_residual, fold, time_mean, unfold

BatchNorm1d = RateBatchNorm1d
BatchNorm2d = RateBatchNorm2d

__all__ = [
    "LIF",
    "Affine",
    "BatchNorm1d",
    "BatchNorm2d",
    "Conv2d",
    "Dropout",
    "PackedSpikes",
    "RateBatchNorm1d",
    "RateBatchNorm2d",
    "SpikeElementWise",
    "add_residual",
    "conv_bn",
    "fold",
    "pack_spikes",
    "rate_safe_",
    "time_mean",
    "unfold",
    "unpack_spikes",
]
