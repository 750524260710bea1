"""Started by torchrun from test_distributed.py: a training run (DDP, a few steps) through the
training loop, then the threads this process still runs (Gloo's worker threads must be gone)."""

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dist_worker

from esdsnn.train import loop


def main(out: Path) -> None:
    loop.train(dist_worker.loop_config("esd", {}, str(out / "run")), stop=dist_worker.StopAfter(2))
    names = sorted(open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task"))
    print(f"rank {os.environ['RANK']} threads: {','.join(names)}", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(Path(sys.argv[1]))
