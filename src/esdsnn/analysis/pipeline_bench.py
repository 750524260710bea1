"""Does the input pipeline keep up? Samples per second of the recipe pipelines (loading and
batched augmentation on the device) on synthetic data of the real shapes and dtypes."""

from __future__ import annotations

from collections.abc import Sequence

import torch

LOADERS_JSON = "loaders.json"


def measure_loaders(*, device: str = "cpu", threads: int = 1, batches: int = 8, seed: int = 0) -> list[dict]:
    """Images/s of the recipe input pipelines on synthetic data of the real shapes and dtypes.

    CIFAR: uint8 32×32 images, batch 128, crop + flip + AutoAugment + Cutout + normalise on
    ``device``. CIFAR10-DVS: uint8 frames ``[T=10, 2, 128, 128]``, batch 32, resize to 48 + flip +
    one NDA op. Compare with the ``step_s`` of a training step at the recipe's batch and T.
    """
    from esdsnn.data.augment import AugmentConfig, measure_loader_throughput
    from esdsnn.data.cifar import cifar_bundle_from_tensors
    from esdsnn.data.dvs import dvs_bundle_from_frames

    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(seed)
    records = []
    n = 128 * (batches + 1)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (n,), generator=gen)
    cifar = cifar_bundle_from_tensors(
        "cifar10",
        images,
        labels,
        images[:128],
        labels[:128],
        batch_size=128,
        seed=seed,
        device=device,
        augment=AugmentConfig(),
    )
    records.append(
        {
            "loader": "cifar10 train (crop, flip, AutoAugment, Cutout)",
            "batch": 128,
            "images_per_s": measure_loader_throughput(cifar.train, batches),
            "device": device,
            "threads": threads,
        }
    )
    records.append(
        {
            "loader": "cifar10 test (normalise)",
            "batch": 128,
            "images_per_s": measure_loader_throughput(cifar.test, 1, warmup=0),
            "device": device,
            "threads": threads,
        }
    )
    n = 32 * (batches + 1)
    frames = torch.randint(0, 4, (n, 10, 2, 128, 128), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (n,), generator=gen)
    dvs = dvs_bundle_from_frames(frames, labels, frames[:32], labels[:32], batch_size=32, seed=seed, device=device)
    records.append(
        {
            "loader": "cifar10-dvs train, T=10 (resize 48, flip, NDA)",
            "batch": 32,
            "images_per_s": measure_loader_throughput(dvs.train, batches),
            "device": device,
            "threads": threads,
        }
    )
    return records


def loaders_markdown(records: Sequence[dict]) -> str:
    lines = ["| input pipeline | batch | samples/s | device | threads |", "|---|---|---|---|---|"]
    lines += [
        f"| {r['loader']} | {r['batch']} | {r['images_per_s']:.0f} | {r['device']} | {r['threads']} |" for r in records
    ]
    return "\n".join(lines) + "\n"


__all__ = ["LOADERS_JSON", "loaders_markdown", "measure_loaders"]
