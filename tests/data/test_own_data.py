"""Your own data, checked: labels, sizes, event npz, crop/flip, the validation split, defaults."""

import numpy as np
import pytest
import torch

from esdsnn.config import TrainConfig
from esdsnn.data import dataset_info, load_dataset
from esdsnn.data.arrays import check_labels, make_bundle
from esdsnn.data.augment import AugmentConfig
from esdsnn.data.validation import hold_out_validation, split_indices
from esdsnn.defaults import DataFacts, sized_defaults
from esdsnn.errors import ConfigError, DataError
from esdsnn.runs.build import build_training_data


def write_npz(
    path,
    n_train=120,
    n_test=40,
    classes=4,
    shape=(12, 12),
    y_train=None,
    y_test=None,
    x_train=None,
    x_test=None,
    seed=0,
):
    rng = np.random.default_rng(seed)
    ytr = np.arange(n_train) % classes if y_train is None else np.asarray(y_train)
    yte = np.arange(n_test) % classes if y_test is None else np.asarray(y_test)
    xtr = rng.integers(0, 256, (len(ytr), *shape), dtype=np.uint8) if x_train is None else x_train
    xte = rng.integers(0, 256, (len(yte), *shape), dtype=np.uint8) if x_test is None else x_test
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    return path


# ---- labels -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "y_train, y_test, message",
    [
        (np.arange(1, 11).repeat(3), np.arange(1, 11), r"holds 1, 2, .* and lacks 0; subtract 1 from every label"),
        (np.r_[np.arange(10).repeat(3), 99], np.arange(10), r"lacks 10, 11, .*remap them to 0..K-1"),
        (np.arange(3).repeat(4), np.array([0, 1, 2, 5]), r"y_test holds label\(s\) 5 that no training sample has"),
        (np.arange(5).repeat(1), np.arange(5), r"5 training samples for 5 classes; need at least two per class \(10\)"),
        (np.zeros(8, int), np.zeros(2, int), r"names only one class"),
    ],
)
def test_labels_must_be_0_to_k_minus_1_with_every_class_in_training(y_train, y_test, message):
    with pytest.raises(DataError, match=message):
        check_labels(y_train, y_test, "mine.npz")


def test_good_labels_give_the_number_of_classes():
    assert check_labels(np.arange(10).repeat(2), np.array([3, 9]), "x") == 10


@pytest.mark.parametrize(
    "y, message",
    [
        (np.r_[-1, np.arange(9)].repeat(2), r"negative labels \(-1\)"),
        (np.arange(20) + 0.5, r"non-integer labels"),
    ],
)
def test_negative_and_non_integer_labels_are_named(tmp_path, y, message):
    path = write_npz(tmp_path / "bad.npz", y_train=y, n_test=4)
    with pytest.raises(DataError, match=message):
        load_dataset("npz", data_path=str(path))


def test_a_batch_larger_than_the_training_set_is_refused(tmp_path):
    path = write_npz(tmp_path / "d.npz", n_train=40)
    config = TrainConfig.from_dict(
        {"dataset": "npz", "data_path": str(path), "batch_size": 64, "arch": "digits_resnet"}
    )
    with pytest.raises(
        ConfigError,
        match=r"batch_size 64 is larger than the 36 training samples left after the "
        r"validation split; use --batch-size 36 or less",
    ):
        build_training_data(config.resolved(), torch.device("cpu"))


# ---- event npz ----------------------------------------------------------------------------------
def test_event_npz_batches_are_time_major_and_t_must_match(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, (24, 3, 2, 6, 6), dtype=np.uint8)  # [N, T, C, H, W] counts
    path = write_npz(
        tmp_path / "ev.npz", x_train=x[:16], y_train=np.arange(16) % 2, x_test=x[16:], y_test=np.arange(8) % 2
    )
    bundle = load_dataset("npz", data_path=str(path), batch_size=8)
    assert bundle.time_steps == 3 and bundle.input_shape == (2, 6, 6)
    xb, _yb = next(iter(bundle.test))
    assert xb.shape == (3, 8, 2, 6, 6) and xb.dtype == torch.float32
    assert torch.equal(xb, torch.from_numpy(x[16:24]).float().transpose(0, 1))  # taken as they are
    config = TrainConfig.from_dict({"dataset": "npz", "data_path": str(path), "T": 4, "batch_size": 8})
    with pytest.raises(ConfigError, match="gives 3 frames per sample but T=4: use --T 3"):
        build_training_data(config.resolved(), torch.device("cpu"))
    config = config.replace(T=3)
    config, bundle, _ = build_training_data(config.resolved(), torch.device("cpu"))
    assert config.arch == "digits_resnet" and bundle.time_steps == 3


# ---- crop and flip ------------------------------------------------------------------------------
def test_npz_augmentation_is_off_by_default_and_crop_flip_work_when_asked():
    x = torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8)
    y = torch.arange(32) % 4
    plain = make_bundle("npz", x, y, x[:8], y[:8], num_classes=4, batch_size=32, seed=0)
    xb, _ = next(iter(plain.train))
    order = torch.randperm(32, generator=torch.Generator().manual_seed(0))
    mean, std = x.float().div(255).mean(), x.float().div(255).std(unbiased=False)
    assert torch.allclose(xb, (x[order].float() / 255 - mean) / std, atol=1e-5)  # no augmentation

    flipped = make_bundle(
        "npz", x, y, x[:8], y[:8], num_classes=4, batch_size=32, seed=0, augment=AugmentConfig(flip=True, crop=False)
    )
    xf, _ = next(iter(flipped.train))
    same = torch.isclose(xf, xb).flatten(1).all(1)
    mirrored = torch.isclose(xf, xb.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 4 < int(mirrored.sum()) < 28  # about half flipped

    cropped = make_bundle(
        "npz",
        x,
        y,
        x[:8],
        y[:8],
        num_classes=4,
        batch_size=32,
        seed=0,
        augment=AugmentConfig(crop=True, flip=False, crop_padding=2),
    )
    xc, _ = next(iter(cropped.train))
    zero = (0 - mean) / std  # the padding is black before normalisation
    assert bool(torch.isclose(xc, zero).any()) and not torch.allclose(xc, xb)


def test_config_yaml_records_only_augmentations_that_apply():
    npz = TrainConfig.from_dict({"dataset": "npz", "data_path": "x.npz"}).resolved().to_dict()
    assert (npz["crop"], npz["flip"]) == (False, False) and "autoaugment" not in npz and "cutout" not in npz
    cifar = TrainConfig.from_dict({"dataset": "cifar10"}).resolved().to_dict()
    assert all(cifar[k] for k in ("crop", "flip", "autoaugment", "cutout"))
    digits = TrainConfig.from_dict({"dataset": "digits"}).resolved().to_dict()
    assert not any(k in digits for k in ("crop", "flip", "autoaugment", "cutout", "crop_padding"))
    with pytest.raises(ConfigError, match="--autoaugment does not apply to npz .*crop, flip, crop_padding"):
        TrainConfig.from_dict({"dataset": "npz", "autoaugment": True}).check_applicable()
    assert dataset_info("cifar10").recipe and not dataset_info("npz").recipe


# ---- validation split ---------------------------------------------------------------------------
def test_validation_split_is_stratified_seeded_and_disjoint():
    labels = np.repeat(np.arange(5), [40, 30, 20, 60, 50])
    train, val = split_indices(labels, 0.1, seed=3)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(labels)
    counts = np.bincount(labels[val], minlength=5)
    assert np.all(np.abs(counts - 0.1 * np.bincount(labels)) <= 1)  # each class keeps its share
    assert np.array_equal(split_indices(labels, 0.1, seed=3)[1], val)
    assert not np.array_equal(split_indices(labels, 0.1, seed=4)[1], val)


def test_a_class_with_one_training_sample_trains_and_is_not_held_out():
    """A small set can hold a class with a single sample (e.g. 200 images of 26 letters): the
    stratified split cannot hold it out, so it stays in training and the other classes are split
    as they would be; the split of data without such a class is exactly the earlier one."""
    from sklearn.model_selection import train_test_split

    labels = np.array([0] * 10 + [1] * 10 + [2] + [3] * 10)
    single = np.flatnonzero(labels == 2)
    train, val = split_indices(labels, 0.2, seed=0)
    assert np.isin(single, train).all() and not np.isin(single, val).any()
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(labels)
    assert np.array_equal(np.bincount(labels[val], minlength=4), [2, 2, 0, 2])
    plain = np.repeat(np.arange(3), [10, 10, 10])
    want = train_test_split(np.arange(30), test_size=3, stratify=plain, random_state=5)[1]
    assert np.array_equal(split_indices(plain, 0.1, seed=5)[1], np.sort(want))
    with pytest.raises(ConfigError, match="single sample.*--val-fraction"):
        split_indices(np.arange(5), 0.1, seed=0)  # every class a single sample


def test_validation_batches_come_from_training_samples_prepared_like_test():
    x = torch.rand(100, 1, 4, 4)
    y = torch.arange(100) % 2
    bundle = make_bundle("npz", x, y, x[:10] + 5, y[:10], num_classes=2, batch_size=16, seed=0)
    held = hold_out_validation(bundle, 0.2, seed=0)
    assert (held.num_train, held.num_val, held.num_test) == (80, 20, 10)
    train_x = torch.cat([b[0] for b in held.train])
    val_x = torch.cat([b[0] for b in held.val])
    everything = bundle.train.x  # normalised once, as float
    for row in val_x:
        assert bool((everything == row).flatten(1).all(1).any())  # a training sample ...
        assert not bool((train_x == row).flatten(1).all(1).any())  # ... that is not trained on


# ---- defaults sized to the data -----------------------------------------------------------------
@pytest.mark.parametrize(
    "shape, n, arch, batch",
    [
        ((1, 8, 8), 1400, "digits_resnet", 64),  # digits-sized: full resolution
        ((1, 28, 28), 54000, "small_resnet", 64),  # MNIST-sized
        ((1, 28, 28), 300, "small_resnet", 16),  # a small set: about a tenth of it per batch
        ((3, 32, 32), 45000, "small_resnet", 64),  # CIFAR-sized
        ((3, 32, 32), 300, "small_resnet", 16),
        ((3, 64, 48), 639, "small_resnet", 32),  # the largest side decides; just under 640 samples
        ((3, 100, 100), 5000, "resnet18", 64),
        ((3, 96, 96), 20, "resnet18", 8),  # never below 8
    ],
)
def test_sized_defaults_follow_input_size_and_training_samples(shape, n, arch, batch):
    chosen = sized_defaults("npz", DataFacts(shape, 10, n))
    assert chosen["arch"].value == arch and chosen["batch_size"].value == batch
    assert chosen["epochs"].value == 20 and chosen["val_fraction"].value == 0.1 and chosen["threads"].value >= 1
    assert chosen["lr_schedule"].value == "step" and chosen["lr"].value == 0.1  # a loss scale of 1 (BPTT)
    assert "core(s) free at the start" in chosen["threads"].reason
    assert f"{shape[1]}×{shape[2]}" in chosen["arch"].reason
    recipe = sized_defaults("cifar10", DataFacts(shape, 10, n))
    assert recipe["arch"].value == "resnet18" and recipe["epochs"].value == 300 and recipe["val_fraction"].value == 0
    assert recipe["lr"].value == 0.1 and recipe["lr_schedule"].value == "epoch"  # the paper's


def test_sized_learning_rate_is_a_step_of_0_1_on_the_unscaled_loss():
    """RateBP-based methods scale their loss by 1/T, so on data without a recipe their default lr
    is 0.1·T (0.4 at T = 4); BPTT and the ANN keep 0.1; a loss scale set by hand keeps 0.1; the
    paper's recipes and the bundled digits keep their own (0.1, a cosine per epoch)."""
    facts = DataFacts((1, 28, 28), 26, 54000)

    def chosen(**settings):
        config = TrainConfig.from_dict({"dataset": "npz", **settings})
        return config.chosen_defaults(facts)

    assert chosen()["lr"].value == 0.4 and "scale of 0.25" in chosen()["lr"].reason  # esd, T = 4
    assert chosen(T=6)["lr"].value == pytest.approx(0.6)
    assert chosen(method="ratebp", T=2)["lr"].value == 0.2 and chosen(method="sd")["lr"].value == 0.4
    assert chosen(method="bptt")["lr"].value == 0.1 and chosen(method="esd-bptt")["lr"].value == 0.1
    assert chosen(method="ann")["lr"].value == 0.1
    assert chosen(method="kd", teacher_run="t", student_pass="ratebp")["lr"].value == 0.4
    assert chosen(method="kd", teacher_run="t")["lr"].value == 0.1  # student_pass bptt
    assert chosen(loss_scale=0.5)["lr"].value == 0.1
    assert "lr" not in chosen(lr=0.05) and chosen(lr_schedule="epoch").get("lr_schedule") is None
    resolved = TrainConfig.from_dict({"dataset": "npz"}).resolved(facts)
    assert (resolved.optim.lr, resolved.optim.lr_schedule, resolved.arch) == (0.4, "step", "small_resnet")
    for dataset in ("digits", "cifar10"):
        plain = TrainConfig.from_dict({"dataset": dataset}).resolved(facts)
        assert (plain.optim.lr, plain.optim.lr_schedule) == (0.1, "epoch"), dataset


def test_user_settings_are_not_replaced_by_defaults(tmp_path):
    path = write_npz(tmp_path / "d.npz")
    config = TrainConfig.from_dict(
        {"dataset": "npz", "data_path": str(path), "arch": "digits_resnet", "batch_size": 8, "val_fraction": 0.25}
    )
    resolved, bundle, chosen = build_training_data(config.resolved(), torch.device("cpu"))
    assert (resolved.arch, resolved.optim.batch_size, resolved.val_fraction) == ("digits_resnet", 8, 0.25)
    assert "arch" not in chosen and "batch_size" not in chosen and bundle.num_val == 30
