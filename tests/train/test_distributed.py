"""Data-parallel training on CPU with Gloo and two processes (torchrun), and the sharded data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from esdsnn.data.base import TensorBatches
from esdsnn.distill.esd_loss import build_teacher
from esdsnn.layers.rate_norm import RateBatchNorm2d
from esdsnn.layers.sync_norm import GlobalBatchNorm, convert_sync_batchnorm
from esdsnn.passes.ratebp import run_spike_stage
from esdsnn.runs.checkpoint import LAST, load_checkpoint
from esdsnn.runs.files import read_metrics
from esdsnn.runs.lock import holder
from esdsnn.train import loop, session

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import dist_worker  # noqa: E402  (the scenarios and their settings)

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def torchrun(*args, cwd, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *map(str, args)],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ---- sharded batches ---------------------------------------------------------------------------
def _batches(augment=None, n=37, batch=8):
    x = torch.arange(n * 2, dtype=torch.float32).view(n, 1, 1, 2)
    return TensorBatches(x, torch.arange(n), batch, shuffle=True, seed=5, augment=augment)


def _noise(x, gen):  # an augmentation that draws from the epoch's generator
    return x + torch.rand(x.shape, generator=gen)


@pytest.mark.parametrize("augment", [None, _noise])
def test_one_shard_is_the_source_and_shards_make_up_the_global_batch(augment):
    source = _batches(augment)
    source.set_epoch(3)
    whole = list(source)
    one = source.shard(0, 1)
    assert len(one) == len(source) == 5
    for (xa, ya), (xb, yb) in zip(whole, one):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert [torch.equal(a[0], b[0]) for a, b in zip(whole[2:], one.iter_from(2))] == [True] * 3
    assert len(list(one.iter_from(3))) == 2

    shards = [source.shard(r, 2) for r in range(2)]
    assert len(shards[0]) == 5  # the last global batch has 5 samples: 3 + 2, enough for two each
    for k, parts in enumerate(zip(*shards)):
        assert torch.equal(torch.cat([p[0] for p in parts]), whole[k][0])
        assert torch.equal(torch.cat([p[1] for p in parts]), whole[k][1])
    assert len(source.shard(0, 3)) == 4  # 5 samples cannot give three processes two each
    # evaluation keeps every sample: 37 samples over 9 processes, the last batch of 5 included
    evaluated = [source.shard(r, 9, train=False) for r in range(9)]
    assert sorted(int(v) for shard in evaluated for _, y in shard for v in y) == list(range(37))


def test_loader_data_shards_by_sampler_and_resumes_without_decoding_skipped_batches(tmp_path, monkeypatch):
    """ImageNet-style loaders: a padded shard of the epoch's permutation for training (equal
    steps per process), a strided unpadded split for evaluation (every image once), and mid-epoch
    resume that starts the sampler at the saved position."""
    from PIL import Image

    from esdsnn.data.imagenet import ImageFolderDataset, load_imagenet

    for k, wnid in enumerate(["n01", "n02", "n03"]):
        for split, n in (("train", 5), ("val", 3)):
            (tmp_path / split / wnid).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (20, 20), (80 * k, 10 * i, 0)).save(tmp_path / split / wnid / f"{i}.JPEG")
    bundle = load_imagenet(tmp_path, batch_size=4, seed=3, workers=0, image_size=8)
    trains = [bundle.train.shard(rank, 2) for rank in range(2)]
    tests = [bundle.test.shard(rank, 2, train=False) for rank in range(2)]
    train_idx = []
    for t in trains:
        t.set_epoch(1)
        train_idx.append(list(t._sampler()))
        assert len(t) == 4  # 15 images -> 8 per process (one padded), 4 batches of 2
    assert set(train_idx[0]) | set(train_idx[1]) == set(range(15))
    assert len(train_idx[0]) == len(train_idx[1]) == 8
    test_labels = sorted(int(v) for t in tests for _, y in t for v in y)
    assert test_labels == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # every validation image exactly once

    source = trains[1]
    full = list(source)
    resumed = list(source.iter_from(2))
    assert len(resumed) == 2
    decoded = []
    decode = ImageFolderDataset.__getitem__
    monkeypatch.setattr(ImageFolderDataset, "__getitem__", lambda self, i: decoded.append(i) or decode(self, i))
    for (x, y), (xf, yf) in zip(source.iter_from(2), full[2:]):
        assert torch.equal(x, xf) and torch.equal(y, yf)
    assert sorted(decoded) == sorted(train_idx[1][4:])  # only the images of the batches left


# ---- the layers ---------------------------------------------------------------------------------
def test_convert_sync_batchnorm_keeps_rate_layers_and_state():
    _model, method = dist_worker.build("esd")
    before = {k: v.clone() for k, v in method.state_dict().items()}
    convert_sync_batchnorm(method)
    rate = [m for m in method.modules() if isinstance(m, RateBatchNorm2d)]
    plain = [m for m in method.modules() if type(m) is torch.nn.BatchNorm2d]
    assert rate and all(m.sync for m in rate) and not plain
    assert any(isinstance(m, GlobalBatchNorm) for m in method.branches.modules())
    after = method.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    x, y = dist_worker.layer_batch()
    fresh = dist_worker.build("esd")[1]
    a, b = method(x, y), fresh(x, y)  # one process: synchronised layers compute what plain ones do
    assert torch.allclose(a.loss, b.loss, rtol=1e-5)


@pytest.fixture(scope="session")
def two_ranks(tmp_path_factory):
    """Every scenario of dist_worker.py in two Gloo processes: one torchrun launch per test
    session, shared by the pytest-xdist workers (the first one runs it, under a file lock)."""
    from filelock import FileLock

    if "PYTEST_XDIST_WORKER" in os.environ:  # basetemp is <session folder>/popen-gwN
        shared = tmp_path_factory.getbasetemp().parent
    else:
        shared = tmp_path_factory.mktemp("shared")
    out = shared / "esdsnn-ddp-scenarios"
    with FileLock(str(shared / "esdsnn-ddp-scenarios.lock")):
        if not (out / "done").exists():
            if out.exists():
                import shutil

                shutil.rmtree(out)
            out.mkdir()
            proc = torchrun(HERE / "dist_worker.py", out, cwd=out)
            assert proc.returncode == 0, proc.stderr[-4000:]
            (out / "done").write_text("ok")
    return out


def _single_layer_step(method):
    model, wrapped = dist_worker.build(method)
    x, y = dist_worker.layer_batch()
    _, trace = run_spike_stage(model, x, dist_worker.T)
    stats = [(r.mean, r.var) for r in trace.norms.values()]
    model, wrapped = dist_worker.build(method)
    wrapped(x, y).loss.backward()
    return stats, {n: p.grad for n, p in wrapped.named_parameters()}, dict(wrapped.named_buffers())


@pytest.mark.parametrize("method", ["ratebp", "bptt", "esd"])
def test_sync_bn_two_processes_equal_one_process_on_the_global_batch(two_ranks, method):
    """RateBP's recorded spike-stage statistics, the gradients (rate stage, BPTT, ESD branches)
    and the running statistics of 2 × 8 samples equal those of one process with the 16."""
    ranks = [torch.load(two_ranks / f"layer_{method}.rank{r}.pt") for r in range(2)]
    stats, grads, buffers = _single_layer_step(method)
    for rank in ranks:
        assert len(rank["stats"]) == len(stats) > 0
        for (m, v), (m1, v1) in zip(rank["stats"], stats):
            assert torch.allclose(m, m1, atol=1e-6) and torch.allclose(v, v1, atol=1e-6, rtol=1e-5)
        for name, g in grads.items():
            assert torch.allclose(rank["grads"][name], g, atol=1e-6, rtol=1e-4), name
        for name, b in buffers.items():
            if b.is_floating_point():
                assert torch.allclose(rank["buffers"][name], b, atol=1e-6, rtol=1e-5), name
    for name in grads:  # DDP: both ranks hold the same averaged gradient
        assert torch.equal(ranks[0]["grads"][name], ranks[1]["grads"][name]), name


@pytest.mark.parametrize("name, method, changes, steps", dist_worker.LOOP_RUNS)
def test_every_method_trains_data_parallel_and_ranks_agree(two_ranks, name, method, changes, steps):
    (a, params), (b, _) = (
        (d["state"], set(d["params"])) for d in (torch.load(two_ranks / f"{name}.rank{r}.pt") for r in range(2))
    )
    assert params
    for key in a:
        if key in params or changes.get("sync_bn"):  # unsynchronised BN statistics are per process
            assert torch.equal(a[key], b[key]), key
        if a[key].is_floating_point():
            assert torch.isfinite(a[key]).all(), key
    saved = load_checkpoint(two_ranks / name / LAST)
    assert (saved["epoch"], saved["step"]) == (0, steps) and saved["data"]["world_size"] == 2


def test_the_esd_layer_batch_has_uneven_reliable_counts_per_rank():
    """Else the ESD check below could not tell a per-rank KD mean from a global one."""
    _, method = dist_worker.build("esd")
    x, y = dist_worker.layer_batch()
    logits, features = method.training_pass(x)
    heads = [b(f) for b, f in zip(method.branches, features)] + [logits]
    has = build_teacher(heads, y, method.distill).has_teacher
    first, second = (int(h.sum()) for h in has.tensor_split(2))
    assert first != second and first > 0 and second > 0


@pytest.mark.parametrize("name", ["bptt_sync", "ratebp_sync", "esd_sync"])
def test_one_data_parallel_step_equals_one_process(two_ranks, tmp_path, monkeypatch, name):
    """The training loop under torchrun with sync_bn: after a step on a global batch of 64, the
    weights equal (to float rounding) those of one process on the same 64 samples."""
    _, method, changes, steps = next(r for r in dist_worker.LOOP_RUNS if r[0] == name)
    made = {}
    build = session.build_method
    monkeypatch.setattr(session, "build_method", lambda c, m, t=None, **kw: made.setdefault("m", build(c, m, t, **kw)))
    loop.train(dist_worker.loop_config(method, changes, str(tmp_path / "one")), stop=dist_worker.StopAfter(steps))
    single = made["m"].state_dict()
    ranked = torch.load(two_ranks / f"{name}.rank0.pt")["state"]
    for key, value in single.items():
        if value.is_floating_point():
            assert torch.allclose(ranked[key], value, atol=1e-5, rtol=1e-4), key


def test_only_rank_0_writes(two_ranks):
    runs = list((two_ranks / "cwd0" / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / LAST).is_file() and (runs[0] / "config.yaml").is_file()
    assert not any((two_ranks / "cwd1").iterdir())


# ---- the command line ---------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["esd", "bptt"])
def test_torchrun_esdsnn_train(tmp_path, method):
    """`torchrun --nproc_per_node=2 -m esdsnn train`: a whole epoch (3 global batches of 512),
    evaluation reduced over both processes, one set of files and one line per epoch."""
    run = tmp_path / "run"
    proc = torchrun(
        "-m",
        "esdsnn",
        "train",
        "--method",
        method,
        "--epochs",
        1,
        "--batch-size",
        512,
        "--T",
        2,
        "--device",
        "cpu",
        "--threads",
        1,
        "--no-progress",
        "--no-report",
        "--sync-bn",
        "--out",
        run,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("epoch 1/1") == 1 and proc.stdout.count("test accuracy") == 1
    assert "Traceback" not in proc.stderr
    names = {p.name for p in run.iterdir()}
    assert names == {
        "config.yaml",
        "env.json",
        "metrics.csv",
        "summary.json",
        LAST,
        "last.prev.pt",
        "best.pt",
        "writer.lock",
    }  # one lock, taken by rank 0 alone (a second rank taking it would be refused)
    assert holder(run) is None
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["test_total"] == 360  # every test sample once
    assert json.loads((run / "env.json").read_text())["world_size"] == 2
    rows = read_metrics(run / "metrics.csv")
    assert len(rows) == 1 and float(rows[0]["test_acc"]) == pytest.approx(summary["test_acc"], abs=1e-6)
    saved = load_checkpoint(run / LAST)
    assert saved["epoch"] == 1 and saved["data"]["steps_per_epoch"] == 3


def test_global_batch_must_divide_over_processes(tmp_path):
    proc = torchrun(
        "-m",
        "esdsnn",
        "train",
        "--batch-size",
        65,
        "--device",
        "cpu",
        "--epochs",
        1,
        "--threads",
        1,
        "--no-progress",
        "--out",
        tmp_path / "run",
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "batch_size 65 is the global batch and must divide evenly over the 2 processes" in proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="lists threads from /proc")
def test_leaving_the_session_stops_the_process_groups_threads(tmp_path):
    """The cause of an intermittent SIGABRT at exit: Gloo's worker threads outliving the
    interpreter (torch._dynamo, imported by DDP after the group exists, kept the group alive).
    After a session with DDP and a step, no Gloo thread may be left."""
    proc = torchrun(HERE / "dist_teardown.py", tmp_path, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = sorted(line for line in proc.stdout.splitlines() if " threads: " in line)
    assert [line.split(" threads:")[0] for line in lines] == ["rank 0", "rank 1"]
    assert not any("gloo" in line for line in lines), lines
