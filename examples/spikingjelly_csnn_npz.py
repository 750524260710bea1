"""The baseline of docs/own-data.md: SpikingJelly's tutorial CSNN trained with BPTT on an
``.npz`` image set for a fixed number of epochs (or a wall-clock budget), then its test accuracy
and the wall time of training and of the whole script.

The network is the CSNN of SpikingJelly's Fashion-MNIST tutorial (conv-BN-LIF-maxpool twice, a
spiking hidden layer, a spiking output layer read as firing rates, MSE to the one-hot label, Adam
1e-3, multi-step mode, T = 4, surrogate ATan, images fed directly at every step), with one
deviation: ``--channels 32`` instead of the tutorial's 128, so that an epoch of 60,000 images
takes minutes, not an hour, on a CPU (the tutorial targets a GPU). Images are read like
``esdsnn train --dataset npz`` reads them (``[N, H, W]``, NCHW or NHWC; uint8 scaled by 1/255)
but, as in the tutorial, not normalised. ``--threads`` torch threads (default 2).

``--epochs N`` trains N whole epochs; ``--seconds S`` instead stops at the first batch boundary
after S seconds of training. The test pass is not counted in the training time; the total is
measured from the start of the script (imports and data loading included). Needs SpikingJelly
(``pip install --no-deps spikingjelly==0.0.0.0.14`` or 2.0.0).

    python examples/spikingjelly_csnn_npz.py --data runs/digits28.npz --epochs 2
"""

from __future__ import annotations

import time

SCRIPT_STARTED = time.perf_counter()

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def csnn(channels: int, in_channels: int, height: int, width: int, classes: int) -> nn.Module:
    from spikingjelly.activation_based import functional, layer, neuron, surrogate

    def lif() -> nn.Module:
        return neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan(), detach_reset=True)

    flat = channels * (height // 4) * (width // 4)
    net = nn.Sequential(
        layer.Conv2d(in_channels, channels, 3, padding=1, bias=False),
        layer.BatchNorm2d(channels),
        lif(),
        layer.MaxPool2d(2),
        layer.Conv2d(channels, channels, 3, padding=1, bias=False),
        layer.BatchNorm2d(channels),
        lif(),
        layer.MaxPool2d(2),
        layer.Flatten(),
        layer.Linear(flat, channels * 4, bias=False),
        lif(),
        layer.Linear(channels * 4, classes, bias=False),
        lif(),
    )
    functional.set_step_mode(net, "m")
    return net


def images(x: np.ndarray) -> torch.Tensor:
    """``[N, H, W]``, ``[N, C, H, W]`` or ``[N, H, W, C]`` (channels: the smaller of axes 1 and 3,
    as esdsnn reads them) as float ``[N, C, H, W]``, uint8 scaled to 0..1."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.shape[3] < x.shape[1]:
        x = x.transpose(0, 3, 1, 2)
    t = torch.from_numpy(np.ascontiguousarray(x)).float()
    return t.div_(255) if x.dtype == np.uint8 else t


def main() -> None:
    from importlib.metadata import version

    from spikingjelly.activation_based import functional

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=int, help="train this many whole epochs (default: 2 unless --seconds)")
    budget.add_argument("--seconds", type=float, help="train for this wall-clock budget instead")
    parser.add_argument("--channels", type=int, default=32, help="tutorial: 128; 32 to suit a CPU")
    parser.add_argument("--T", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    epochs = args.epochs if args.epochs is not None else (None if args.seconds is not None else 2)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    d = np.load(args.data)
    x_train, x_test = images(d["x_train"]), images(d["x_test"])
    y_train, y_test = torch.from_numpy(d["y_train"]).long(), torch.from_numpy(d["y_test"]).long()
    classes = int(y_train.max()) + 1
    net = csnn(args.channels, x_train.shape[1], x_train.shape[2], x_train.shape[3], classes)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def out_of_time() -> bool:
        return args.seconds is not None and time.perf_counter() - started >= args.seconds

    started, steps, seen, epoch = time.perf_counter(), 0, 0, 0
    while (epoch < epochs) if epochs is not None else not out_of_time():
        epoch += 1
        order = torch.randperm(len(y_train))
        for i in range(0, len(order), args.batch_size):
            idx = order[i : i + args.batch_size]
            x = x_train[idx].unsqueeze(0).repeat(args.T, 1, 1, 1, 1)  # direct encoding, [T, B, C, H, W]
            rate = net(x).mean(0)
            loss = F.mse_loss(rate, F.one_hot(y_train[idx], classes).float())
            opt.zero_grad()
            loss.backward()
            opt.step()
            functional.reset_net(net)
            steps, seen = steps + 1, seen + len(idx)
            if out_of_time():
                break
    trained_s = time.perf_counter() - started
    net.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y_test), 256):
            x = x_test[i : i + 256].unsqueeze(0).repeat(args.T, 1, 1, 1, 1)
            correct += int((net(x).mean(0).argmax(-1) == y_test[i : i + 256]).sum())
            functional.reset_net(net)
    total_s = time.perf_counter() - SCRIPT_STARTED
    print(
        f"SpikingJelly {version('spikingjelly')} CSNN channels={args.channels}, T={args.T}, BPTT, Adam, "
        f"batch {args.batch_size}, seed {args.seed}, {torch.get_num_threads()} thread(s), "
        f"CPU {torch.backends.cpu.get_cpu_capability()}: {steps} steps "
        f"({seen / len(y_train):.2f} epochs, {seen / trained_s:.0f} samples/s); training {trained_s:.1f} s, "
        f"whole script {total_s:.1f} s -> test accuracy {correct / len(y_test):.2%}"
    )


if __name__ == "__main__":
    main()
