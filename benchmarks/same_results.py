"""Do two checkouts compute the same training steps? Losses, logits, every gradient, the state
after two SGD steps and a prediction, on a few architectures, methods and reset rules.

    python benchmarks/same_results.py save before.pt            # in one checkout (e.g. main)
    python benchmarks/same_results.py check before.pt           # in the other: one line each
    python benchmarks/same_results.py check before.pt --precision 32,bf16-mixed

``check`` prints ``same`` or the first tensors that differ and exits 1 if any configuration
differs; under ``32`` a change that only reorganises the step must keep every bit.
"""

from __future__ import annotations

import argparse
import sys

import torch

import esdsnn
from esdsnn.runtime.precision import autocast_for, use_precision

# (arch, input shape, method, LIF options, T); batch 4, or 8 on 32×32 (LIF layers above
# esdsnn.neurons.lif.CPU_BLOCK neurons, which the no-grad loops take in blocks)
CONFIGS = [
    ("resnet18", (3, 32, 32), "esd", {}, 2),
    ("resnet18", (3, 16, 16), "esd", {}, 4),
    ("resnet18", (3, 16, 16), "bptt", {}, 4),
    ("resnet18", (3, 16, 16), "ratebp", {}, 1),
    ("resnet18", (3, 16, 16), "bptt", {}, 1),
    ("digits_resnet", (1, 8, 8), "esd", {"reset": "hard", "detach_reset": False}, 3),
    ("digits_resnet", (1, 8, 8), "ratebp", {"reset": "soft", "detach_reset": False}, 3),
    ("digits_resnet", (1, 8, 8), "ratebp", {"reset": "hard", "v_reset": -0.2}, 3),
    ("digits_resnet", (1, 8, 8), "esd-bptt", {"decay": 0.5}, 3),
    ("resnet19", (3, 8, 8), "esd", {}, 2),
    ("vggsnn", (2, 16, 16), "ratebp", {}, 3),
    ("preact_resnet34", (3, 32, 32), "ratebp", {}, 2),
]


def run(precision: str, arch: str, shape: tuple, method: str, neuron: dict, T: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = esdsnn.create_model(arch, num_classes=10, in_channels=shape[0], **neuron)
    trainer = esdsnn.create_method(method, model, T=T).train()
    opt = torch.optim.SGD(trainer.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    batch = 8 if shape[1] == 32 else 4
    x = torch.rand(T, batch, *shape, generator=g) if arch == "vggsnn" else torch.randn(batch, *shape, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    out: dict[str, torch.Tensor] = {}
    with use_precision(precision):
        for step in range(2):
            opt.zero_grad(set_to_none=True)
            with autocast_for(precision, "cpu"):
                result = trainer(x, y)
            result.loss.backward()
            out[f"loss{step}"], out[f"logits{step}"] = result.loss.detach(), result.logits.detach()
            out.update({f"grad{step}:{n}": p.grad.clone() for n, p in trainer.named_parameters() if p.grad is not None})
            opt.step()
        out.update({f"state:{n}": t.clone() for n, t in trainer.state_dict().items()})
        out["predict"] = esdsnn.predict(model.eval(), x, T=T)
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["save", "check"])
    parser.add_argument("file")
    parser.add_argument("--precision", default="32", help="comma-separated precisions (default: 32)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = {
        f"{p}|{a}|{m}|{n}|T={t}": run(p, a, s, m, n, t) for p in args.precision.split(",") for a, s, m, n, t in CONFIGS
    }
    if args.mode == "save":
        torch.save(results, args.file)
        print(f"saved {len(results)} configurations to {args.file}")
        return 0
    before, differ = torch.load(args.file), 0
    for key, rec in results.items():
        if key not in before:
            print(f"not in {args.file}: {key}")
            continue
        old = before[key]
        bad = [n for n in rec if n not in old or old[n].dtype != rec[n].dtype or not torch.equal(old[n], rec[n])]
        bad += [n for n in old if n not in rec]
        differ += bool(bad)
        print(
            f"{'same  ' if not bad else 'DIFFER'} {key}"
            + (f": {len(bad)} tensors, e.g. {', '.join(bad[:3])}" if bad else "")
        )
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
