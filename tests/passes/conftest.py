"""The pass tests compare exact paths (RateBP = BPTT, memory switches): run them with float32
spike-stage convolutions even where the default ("auto") would pick bfloat16 (native-bf16
hardware); tests/passes/test_spike_dtype.py sets the type itself."""
import pytest

from esdsnn.passes import use_spike_dtype


@pytest.fixture(autouse=True)
def _float32_spike_stage():
    with use_spike_dtype("float32"):
        yield
