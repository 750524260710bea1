"""The baseline of docs/own-data.md: SpikingJelly's CSNN trained with BPTT on an
``.npz`` image set for a fixed wall-clock budget, then its test accuracy.

The network is the CSNN of SpikingJelly's Fashion-MNIST tutorial (conv-BN-LIF-maxpool twice, a
spiking hidden layer, a spiking output layer read as firing rates, MSE to the one-hot label, Adam
1e-3), made small (``--channels 32`` instead of 128) so that it trains a useful number of steps
on a CPU in a few minutes; multi-step mode, T = 4, surrogate ATan, ``--threads`` torch threads (2). Training
stops at the first batch boundary after ``--seconds`` of training; the test pass is not counted
in the budget. Needs SpikingJelly (``pip install --no-deps spikingjelly==0.0.0.0.14`` or 2.0.0).

    python examples/spikingjelly_csnn_npz.py --data runs/digits28.npz --seconds 160
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def csnn(channels: int, in_channels: int, side: int, classes: int) -> nn.Module:
    from spikingjelly.activation_based import functional, layer, neuron, surrogate

    def lif() -> nn.Module:
        return neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan(), detach_reset=True)

    flat = channels * (side // 4) * (side // 4)
    net = nn.Sequential(
        layer.Conv2d(in_channels, channels, 3, padding=1, bias=False), layer.BatchNorm2d(channels), lif(),
        layer.MaxPool2d(2),
        layer.Conv2d(channels, channels, 3, padding=1, bias=False), layer.BatchNorm2d(channels), lif(),
        layer.MaxPool2d(2),
        layer.Flatten(),
        layer.Linear(flat, channels * 4, bias=False), lif(),
        layer.Linear(channels * 4, classes, bias=False), lif(),
    )
    functional.set_step_mode(net, "m")
    return net


def main() -> None:
    from importlib.metadata import version

    from spikingjelly.activation_based import functional

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--seconds", type=float, default=160.0)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--T", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    d = np.load(args.data)
    x_train = torch.from_numpy(d["x_train"]).float().div_(255).unsqueeze(1)
    x_test = torch.from_numpy(d["x_test"]).float().div_(255).unsqueeze(1)
    y_train, y_test = torch.from_numpy(d["y_train"]).long(), torch.from_numpy(d["y_test"]).long()
    classes = int(y_train.max()) + 1
    net = csnn(args.channels, x_train.shape[1], x_train.shape[-1], classes)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    started, steps, seen, epoch = time.perf_counter(), 0, 0, 0
    while time.perf_counter() - started < args.seconds:
        epoch += 1
        order = torch.randperm(len(y_train))
        for i in range(0, len(order), args.batch_size):
            idx = order[i:i + args.batch_size]
            x = x_train[idx].unsqueeze(0).repeat(args.T, 1, 1, 1, 1)  # direct encoding, [T, B, C, H, W]
            rate = net(x).mean(0)
            loss = F.mse_loss(rate, F.one_hot(y_train[idx], classes).float())
            opt.zero_grad()
            loss.backward()
            opt.step()
            functional.reset_net(net)
            steps, seen = steps + 1, seen + len(idx)
            if time.perf_counter() - started >= args.seconds:
                break
    trained_s = time.perf_counter() - started
    net.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y_test), 256):
            x = x_test[i:i + 256].unsqueeze(0).repeat(args.T, 1, 1, 1, 1)
            correct += int((net(x).mean(0).argmax(-1) == y_test[i:i + 256]).sum())
            functional.reset_net(net)
    print(f"SpikingJelly {version('spikingjelly')} CSNN channels={args.channels}, T={args.T}, BPTT, "
          f"{args.threads} thread(s): {steps} steps "
          f"({seen / len(y_train):.2f} epochs, {seen / trained_s:.0f} samples/s) in {trained_s:.0f} s -> test accuracy "
          f"{correct / len(y_test):.2%}")


if __name__ == "__main__":
    main()
