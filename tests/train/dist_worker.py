"""One process of the data-parallel checks in ``test_distributed.py``, started by torchrun.

``python -m torch.distributed.run --nproc_per_node=2 dist_worker.py OUT`` runs every scenario
below in each process and saves what it saw under ``OUT/<scenario>.rank<r>.pt``; the tests
compare the ranks with each other and with a single process on the same global batch.
"""

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

import esdsnn
from esdsnn.config import TrainConfig
from esdsnn.layers.sync_norm import convert_sync_batchnorm
from esdsnn.passes.ratebp import run_spike_stage
from esdsnn.train import loop, session
from esdsnn.train.distributed import DistContext, init_process_group, leave_process_group, wrap_ddp

T = 2
BATCH = 16
# (name, method, config changes, steps): training-loop runs stopped after `steps` steps
LOOP_RUNS = [
    ("bptt_sync", "bptt", {"sync_bn": True}, 1),
    ("ratebp_sync", "ratebp", {"sync_bn": True}, 1),
    ("esd_sync", "esd", {"sync_bn": True}, 1),  # reliable teacher: uneven counts over the ranks
    ("esd", "esd", {}, 2),
    ("esd_bptt_sync", "esd-bptt", {"sync_bn": True}, 2),
    ("sd", "sd", {}, 2),
    ("ann", "ann", {}, 2),
]


def layer_batch():
    """16 samples; for ESD, the first half has 1 sample with a reliable teacher, the second 4."""
    gen = torch.Generator().manual_seed(3)
    return torch.randn(BATCH, 1, 8, 8, generator=gen), torch.randint(0, 10, (BATCH,), generator=gen)


def build(method):
    torch.manual_seed(0)
    model = esdsnn.create_model("digits_resnet", num_classes=10, in_channels=1)
    return model, esdsnn.create_method(method, model, T=T)


def loop_config(method, changes, out):
    return TrainConfig.from_dict(
        dict(
            method=method,
            T=T,
            epochs=1,
            batch_size=64,
            threads=1,
            progress=False,
            report=False,
            device="cpu",
            out=out,
            **changes,
        )
    )


class StopAfter:
    def __init__(self, steps):
        self.n = steps - 1

    def is_set(self):
        self.n -= 1
        return self.n < 0


def main(out: Path) -> None:
    torch.set_num_threads(1)
    init_process_group(backend="gloo")
    rank, world = dist.get_rank(), dist.get_world_size()

    # 1. the layers: one DDP step on a fixed global batch, sharded
    for method in ("ratebp", "bptt", "esd"):
        model, wrapped = build(method)
        convert_sync_batchnorm(wrapped)
        x, y = layer_batch()
        xs, ys = x.tensor_split(world)[rank], y.tensor_split(world)[rank]
        _, trace = run_spike_stage(model, xs, T)
        stats = [(r.mean.clone(), r.var.clone()) for r in trace.norms.values()]
        model, wrapped = build(method)  # fresh running statistics for the step itself
        convert_sync_batchnorm(wrapped)
        step = wrap_ddp(wrapped, DistContext(rank, world))
        step(xs, ys).loss.backward()
        torch.save(
            {
                "stats": stats,
                "grads": {n: p.grad.clone() for n, p in wrapped.named_parameters()},
                "buffers": {n: b.clone() for n, b in wrapped.named_buffers()},
            },
            out / f"layer_{method}.rank{rank}.pt",
        )

    # 2. the training loop: every method, a few steps
    made = {}
    build_method = session.build_method

    def capture(config, model, teacher=None, **options):
        made["method"] = build_method(config, model, teacher, **options)
        return made["method"]

    session.build_method = capture
    home = Path.cwd()
    for name, method, changes, steps in LOOP_RUNS:
        loop.train(loop_config(method, changes, str(out / name)), stop=StopAfter(steps))
        state = {k: v.detach().clone() for k, v in made["method"].state_dict().items()}
        params = [n for n, _ in made["method"].named_parameters()]
        torch.save({"state": state, "params": params}, out / f"{name}.rank{rank}.pt")

    # 3. no --out: only rank 0 creates (and writes) a run directory, in its own working folder
    cwd = out / f"cwd{rank}"
    cwd.mkdir()
    os.chdir(cwd)
    try:
        loop.train(loop_config("bptt", {}, None), stop=StopAfter(1))
    finally:
        os.chdir(home)
    leave_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
