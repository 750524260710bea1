"""Interop fixtures: SpikingJelly 2.0 (where ``ESDSNN_SPIKINGJELLY_PATH`` puts it first on the path,
see tests/conftest.py) and its model zoo, imported without torchvision."""

import sys
import types
import warnings
from contextlib import contextmanager

import pytest

SJ2_HINT = (
    "needs SpikingJelly 2.0: pip install --no-deps --target .venv/sj2 spikingjelly==2.0.0 and run with "
    "ESDSNN_SPIKINGJELLY_PATH=.venv/sj2"
)


@contextmanager
def torchvision_stub():
    """The zoo modules import ``load_state_dict_from_url`` from torchvision for pretrained weights
    only; torchvision cannot be imported beside this torch, so a stand-in module serves the import
    (and refuses to download) and leaves ``sys.modules`` when it is done."""

    def load_state_dict_from_url(*args, **kwargs):
        raise RuntimeError("no pretrained weights in the tests")

    package, models, utils = (
        types.ModuleType(n) for n in ("torchvision", "torchvision.models", "torchvision.models.utils")
    )
    utils.load_state_dict_from_url = load_state_dict_from_url
    package.models, models.utils = models, utils
    stubs = {m.__name__: m for m in (package, models, utils)}
    added = [name for name in stubs if name not in sys.modules]
    sys.modules.update({name: stubs[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            sys.modules.pop(name, None)


def spikingjelly_2() -> types.SimpleNamespace:
    """SpikingJelly 2.x's ``neuron``, ``functional``, ``layer`` and zoo modules, or a skip."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sj = pytest.importorskip("spikingjelly.activation_based", reason=SJ2_HINT)
        from esdsnn.analysis.bench_baseline import spikingjelly_version

        version = spikingjelly_version()
        if not version.split(".")[0].isdigit() or int(version.split(".")[0]) < 2:
            pytest.skip(f"{SJ2_HINT} (found {version})")
        with torchvision_stub():
            from spikingjelly.activation_based.model import sew_resnet, spiking_resnet, spiking_vgg
        from spikingjelly.activation_based import functional, layer, neuron
        from spikingjelly.activation_based.nir_exchange import import_from_nir
    return types.SimpleNamespace(
        neuron=neuron,
        functional=functional,
        layer=layer,
        sew_resnet=sew_resnet,
        spiking_resnet=spiking_resnet,
        spiking_vgg=spiking_vgg,
        version=version,
        import_from_nir=import_from_nir,
        package=sj,
    )


@pytest.fixture
def sj2() -> types.SimpleNamespace:
    return spikingjelly_2()
