"""Errors that carry a one-line message meant for the user.

The CLI turns these into a single line on stderr and exit code 2; library users can catch them
like any ``ValueError``.
"""


class EsdsnnError(ValueError):
    """Base class: the message names the problem and, where possible, the fix."""


class ConfigError(EsdsnnError):
    """An impossible or unknown configuration value."""


class DataError(EsdsnnError):
    """A missing, truncated or malformed data set or file."""


class CheckpointError(EsdsnnError):
    """A missing, corrupt or incompatible checkpoint or run directory."""


class RunInUse(EsdsnnError):
    """Another process is writing the run directory (a run has one writer)."""


class OutOfMemory(EsdsnnError):
    """The run needs more memory than the device has."""


class RunNotWritable(EsdsnnError):
    """The run directory stopped taking writes (a full disk, a read-only file system)."""


class TrainingDiverged(EsdsnnError):
    """The loss became NaN or infinite."""


class SpikeWriteError(EsdsnnError):
    """An in-place write into a neuron's packed spikes of values other than 0 and 1."""


def brief(exc: BaseException, limit: int = 200, *, with_type: bool = False) -> str:
    """An exception's message on one line, shortened to ``limit`` characters (for error lines
    that name a cause without a traceback); ``with_type`` puts the exception's class first."""
    text = " ".join(str(exc).split())
    if with_type or not text:
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if len(text) <= limit:
        return text
    cut = text[: limit - 3]
    space = cut.rfind(" ")
    return (cut[:space] if space >= limit // 2 else cut).rstrip(" ,;:") + "..."  # whole words where it can


def notice(line: str) -> None:
    """A one-line notice on stderr: something esdsnn did for the user that they should know."""
    import sys

    print(f"esdsnn: notice: {line}", file=sys.stderr, flush=True)


def warning(line: str) -> None:
    """A one-line warning on stderr: something that may make a result not what the user thinks."""
    import sys

    print(f"esdsnn: warning: {line}", file=sys.stderr, flush=True)


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure (CUDA's OutOfMemoryError, or the CPU allocator's
    RuntimeError)."""
    import torch

    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "can't allocate memory" in text or "out of memory" in text.lower() or "not enough memory" in text.lower()
    )
