"""The layers of spiking models: pass-aware where the pass matters, plain torch otherwise.

``LIF`` (the neuron), ``Conv2d`` (step-wise in the no-grad passes, reads packed spikes),
``RateBatchNorm2d`` (BatchNorm that knows the RateBP stages), ``conv_bn`` (the two, with the
BatchNorm normalising the convolution's output in place where it can), ``add_residual``,
``time_mean`` and the fold/unfold helpers; stateless torch layers (pooling, ``Flatten``,
``Linear``, ``Dropout``) work on the folded ``[T·B, ...]`` activations as they are.
"""
from ..neurons.lif import LIF
from .conv import Conv2d
from .rate_norm import RateBatchNorm2d, conv_bn
from ..neurons.spikes import PackedSpikes, pack_spikes, unpack_spikes
from .time import add_residual, fold, time_mean, unfold

__all__ = [
    "Conv2d", "LIF", "PackedSpikes", "RateBatchNorm2d", "add_residual", "conv_bn", "fold", "pack_spikes",
    "time_mean", "unfold", "unpack_spikes",
]
