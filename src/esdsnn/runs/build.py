"""What a run's config describes, built: its device, data, model, training method and teacher.

Training builds its parts with these, and so does everything that reloads a run (``eval``,
``report``, a kd student's teacher), so a saved run is rebuilt exactly as it was trained.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Optional

import torch
from torch import nn

import esdsnn
from esdsnn.config import TrainConfig
from esdsnn.data import DataBundle, DataRequest, TensorBatches, dataset_loader
from esdsnn.data.validation import hold_out_validation, validation_size
from esdsnn.defaults import Choice, DataFacts
from esdsnn.errors import CheckpointError, ConfigError, brief
from esdsnn.methods import TrainingMethod, method_spec
from esdsnn.methods.ratebp import LearnableDecayUnderRateBP
from esdsnn.runs.checkpoint import LAST, load_checkpoint
from esdsnn.runs.files import existing_run_dir


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA if available, else CPU; an unavailable device raises ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name} requested but CUDA is not available; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name} requested but MPS is not available; use --device cpu")
    return device


@contextlib.contextmanager
def torch_threads(n: Optional[int]) -> Iterator[None]:
    """Run with ``n`` torch CPU threads (None: unchanged), restoring the caller's count after."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


#: The batch size data is read with before a default sized to it is chosen.
PROVISIONAL_BATCH = 64


def build_data(config: TrainConfig, device: torch.device) -> DataBundle:
    """The data set of ``config`` on ``device`` (global batches; training shards them), with
    its validation split when ``config.val_fraction`` > 0."""
    request = DataRequest(
        data_path=config.data_path,
        batch_size=config.optim.batch_size or PROVISIONAL_BATCH,
        seed=config.seed,
        device=device,
        T=config.T,
        workers=config.run.workers,
        augment=config.augment,
        options=config.data,
    )
    bundle = dataset_loader(config.dataset)(request)
    if bundle.time_steps is not None and bundle.time_steps != config.T:
        raise ConfigError(
            f"dataset {config.dataset} gives {bundle.time_steps} frames per sample but T={config.T}: "
            f"use --T {bundle.time_steps}"
            + (", or convert the data again with that T" if config.dataset == "cifar10-dvs" else "")
        )
    return hold_out_validation(bundle, config.val_fraction or 0.0, config.seed)


def build_training_data(config: TrainConfig, device: torch.device) -> tuple[TrainConfig, DataBundle, dict[str, Choice]]:
    """Read the data of a new or resumed run; fill in the defaults sized to it.

    Returns the fully resolved config, the data (re-batched to the chosen batch size, with its
    validation split) and the defaults that were chosen, with their reasons. Refuses a batch
    larger than the training set.
    """
    read_with = config.optim.batch_size or PROVISIONAL_BATCH
    bundle = build_data(config.replace(val_fraction=0.0), device)
    facts = DataFacts.of(bundle)
    if facts.num_train is not None:  # sized to what trains, after the validation split
        fraction = config.resolved().val_fraction or 0.0
        facts = dataclasses.replace(
            facts, num_train=facts.num_train - validation_size(facts.num_train, facts.num_classes, fraction)
        )
    chosen = config.chosen_defaults(facts)
    config = config.resolved(facts)
    batch_size = config.optim.batch_size
    assert batch_size is not None  # resolved() sets it
    if batch_size != read_with and isinstance(bundle.train, TensorBatches):
        bundle = bundle.rebatched(batch_size)
    bundle = hold_out_validation(bundle, config.val_fraction or 0.0, config.seed)
    n = bundle.num_train
    if n is not None and batch_size > n:
        raise ConfigError(
            f"batch_size {batch_size} is larger than the {n} training samples"
            + (" left after the validation split" if bundle.val is not None else "")
            + f"; use --batch-size {n} or less"
        )
    return config, bundle, chosen


def build_model(config: TrainConfig, bundle: DataBundle) -> nn.Module:
    """The SNN of ``config`` for the data's classes and channels."""
    assert config.arch is not None  # a resolved config names its model
    return esdsnn.create_model(
        config.arch, num_classes=bundle.num_classes, in_channels=bundle.in_channels, neuron=config.neuron
    )


def build_method(
    config: TrainConfig,
    model: nn.Module,
    teacher: Optional[nn.Module] = None,
    input_shape: Optional[Sequence[int]] = None,
) -> TrainingMethod:
    """The training method around ``model``, with the config sections the method reads; a
    distilling method also gets its trained ``teacher``. ``input_shape``: one sample's (C, H, W),
    for the dry run that plans branches on a plain model's named stages."""
    spec = method_spec(config.method)
    options = {section: getattr(config, section) for section in spec.sections}
    if spec.teacher_method is not None:
        options["teacher"] = teacher
    try:
        return esdsnn.create_method(
            config.method, model, T=config.T, loss_scale=config.loss_scale, input_shape=input_shape, **options
        )
    except LearnableDecayUnderRateBP:
        raise ConfigError(
            f"--learnable-decay needs a BPTT-based method: --method {config.method} (RateBP) gives no "
            f"gradient to the decay; use --no-learnable-decay or --method esd-bptt"
        ) from None


def load_teacher(config: TrainConfig, bundle: DataBundle, device: torch.device) -> nn.Module:
    """The frozen teacher in ``config.teacher_run`` (trained with the method the config's method
    distils from, on the same data set), from its last checkpoint."""
    wanted = method_spec(config.method).teacher_method
    assert config.teacher_run is not None  # TrainConfig requires it of a distilling method
    run_dir = existing_run_dir(config.teacher_run)
    ckpt = load_checkpoint(run_dir / LAST)
    teacher_config = TrainConfig.from_saved(ckpt["config"], source=str(run_dir / LAST)).resolved()
    if teacher_config.method != wanted:
        raise ConfigError(
            f"teacher run {run_dir} was trained with --method {teacher_config.method}; "
            f"{config.method} needs a --method {wanted} run"
        )
    if teacher_config.dataset != config.dataset:
        raise ConfigError(f"teacher run {run_dir} was trained on {teacher_config.dataset}, not {config.dataset}")
    teacher = method_spec(teacher_config.method).prepared(build_model(teacher_config, bundle))
    try:
        teacher.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {run_dir / LAST} does not fit its model: {brief(exc, 300)}") from None
    return teacher.to(device).eval().requires_grad_(False)


__all__ = [
    "PROVISIONAL_BATCH",
    "build_data",
    "build_method",
    "build_model",
    "build_training_data",
    "load_teacher",
    "resolve_device",
    "torch_threads",
]
