"""Classifier training from shards through the DataLoader; streaming evaluation; recipes."""

import numpy as np
import pytest
import torch

from helpers.data import write_digit_shards
from synthscale.classifier.evaluate import Accumulator, build_eval_loader, evaluate_logits, evaluate_model
from synthscale.data.loader import TrainLoader, build_train_loader, epoch_size, nested_shards, part_stream
from synthscale.classifier.recipes import RECIPES, resolve_recipe
from synthscale.classifier.train import full_recipe, load_classifier, predict, train_classifier, train_model

RECIPE = {
    "arch": "resnet18",
    "model_kwargs": {"channels": [16, 32, 64, 128]},
    "epochs": 15,
    "min_steps": 60,
    "batch_size": 64,
    "lr": 0.003,
    "weight_decay": 0.05,
    "pad_crop": 1,
    "input_size": 16,
}


@pytest.fixture(scope="module")
def digit_shards(tmp_path_factory, digits_16):
    images, labels = digits_16
    d = tmp_path_factory.mktemp("shards")
    (d / "train").mkdir()
    (d / "test").mkdir()
    train = write_digit_shards(d / "train", images[:600], labels[:600], 100)
    test = write_digit_shards(d / "test", images[1400:1700], labels[1400:1700], 100)
    return train, test


def test_training_from_shards_is_accurate(tmp_path, digit_shards):
    """The default recipe from PNG shards through the DataLoader learns digits (N=300, 16 px)."""
    train, test = digit_shards
    recipe = {**RECIPE, "pad_crop": 2}
    log = train_model([{"shards": train, "limit": 300}], 10, recipe, 0, tmp_path / "m.safetensors", tmp_path / "log.csv", progress=False)
    assert list(log.columns[:4]) == ["epoch", "step", "train_loss", "train_acc"]
    assert log["train_loss"].iloc[-1] < log["train_loss"].iloc[0]
    model, meta = load_classifier(tmp_path / "m.safetensors")
    assert meta["n_train"] == 300 and meta["input_size"] == 16
    metrics, per_class = evaluate_model(model, build_eval_loader(test, full_recipe(recipe), 128), 10)
    assert metrics["n_eval"] == 300 and per_class["count"].sum() == 300
    assert metrics["top1"] > 0.5, f"top-1 {metrics['top1']} on held-out digits (chance: 0.1)"


def test_in_memory_training_beats_chance(tmp_path, digits_16):
    images, labels = digits_16
    images = np.repeat(images, 3, axis=-1)
    train_x, train_y, test_x, test_y = images[:400], labels[:400], images[1000:1300], labels[1000:1300]
    train_classifier(train_x, train_y, 10, {**RECIPE, "epochs": 8}, 0, tmp_path / "m.safetensors", tmp_path / "log.csv", progress=False)
    model, meta = load_classifier(tmp_path / "m.safetensors")
    assert meta["arch"] == "resnet18" and meta["n_classes"] == 10
    logits, feats = predict(model, test_x)
    assert feats.shape == (300, 128)
    metrics, per_class = evaluate_logits(logits, test_y, 10)
    assert metrics["top1"] > 0.5, f"top-1 {metrics['top1']} is not far above chance (0.1)"
    assert len(per_class) == 10


def test_training_is_deterministic(tmp_path, digit_shards):
    recipe = {**RECIPE, "epochs": 1, "min_steps": 3, "batch_size": 32}
    for name in ("a", "b"):
        train_model([{"shards": digit_shards[0], "limit": 90}], 10, recipe, 1, tmp_path / f"{name}.safetensors", tmp_path / f"{name}.csv", progress=False)
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()


def test_nested_n_reads_the_first_n_images(digit_shards):
    train = digit_shards[0]
    assert nested_shards(train, 150) == train[:2] and nested_shards(train, None) == train
    part = {"shards": train, "limit": 150}
    idx = [i for _, _, i in part_stream(part, seed=0, epoch=0, shuffle=True, buffer=50)]
    assert sorted(idx) == list(range(150)) and idx != list(range(150))
    again = [i for _, _, i in part_stream(part, seed=0, epoch=0, shuffle=True, buffer=50)]
    other = [i for _, _, i in part_stream(part, seed=0, epoch=1, shuffle=True, buffer=50)]
    assert again == idx and other != idx
    assert epoch_size([part]) == 150 and epoch_size([{"shards": train, "limit": None}]) == 600


def _epoch(parts, recipe, seed, epoch, workers, mix=None):
    xs, ys = [], []
    for x, y in build_train_loader(parts, recipe, seed, epoch, mix=mix, batch_size=16, num_workers=workers):
        xs.append(x)
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


def test_loader_order_and_augmentation_per_seed_and_epoch(digit_shards):
    """Batches repeat for the same (seed, epoch); each image's augmentation is the same in any worker."""
    recipe = full_recipe({**RECIPE, "pad_crop": 2})
    parts = [{"shards": digit_shards[0], "limit": 250}]
    x0, y0 = _epoch(parts, recipe, 3, 0, workers=0)
    assert x0.shape == (250, 3, 16, 16) and x0.dtype == torch.float32
    x0b, _ = _epoch(parts, recipe, 3, 0, workers=0)
    assert torch.equal(x0, x0b)
    x1, _ = _epoch(parts, recipe, 3, 1, workers=0)
    assert not torch.equal(x0, x1)
    x2w, y2w = _epoch(parts, recipe, 3, 0, workers=2)
    x2wb, _ = _epoch(parts, recipe, 3, 0, workers=2)
    assert torch.equal(x2w, x2wb), "fixed worker count: identical batches"
    key = lambda x: sorted(x.flatten(1).sum(1).tolist())  # noqa: E731
    assert key(x2w) == pytest.approx(key(x0)), "same augmented images whichever worker draws them"
    assert sorted(y2w.tolist()) == sorted(y0.tolist())


def test_persistent_loader_gives_each_epochs_batches(digit_shards):
    """One DataLoader whose 2 workers live across epochs: epoch e's batches are build_train_loader's
    for epoch e, also after an epoch left half-read (a resume skips batches, DDP ranks stop early)."""
    recipe = full_recipe({**RECIPE, "pad_crop": 2, "shuffle_buffer": 40})
    parts = [{"shards": digit_shards[0], "limit": 250}]
    with TrainLoader(parts, recipe, 3, batch_size=16, num_workers=2) as loader:
        it = loader.epoch(0)
        next(it)  # epoch 0 abandoned after one batch
        for epoch in (1, 2, 0):
            got = list(loader.epoch(epoch))
            want = list(build_train_loader(parts, recipe, 3, epoch, batch_size=16, num_workers=2))
            assert len(got) == len(want) and sum(len(y) for _, y in got) == 250
            for (xg, yg), (xw, yw) in zip(got, want):
                assert torch.equal(xg, xw) and torch.equal(yg, yw)
        workers = loader.loader._iterator._workers
        assert len(workers) == 2 and all(w.is_alive() for w in workers), "the same workers, still running"
    assert not any(w.is_alive() for w in workers)


def test_caches_change_no_batch(digit_shards):
    """Decoded images, whole shards and the fast path's padded, normalised images kept across epochs
    (decode_cache_mb) give the batches of a run without caches, epoch after epoch."""
    parts = [{"shards": digit_shards[0], "limit": 250}]
    runs = {}
    for mb in (0, 64):
        recipe = full_recipe({**RECIPE, "pad_crop": 2, "decode_cache_mb": mb, "shuffle_buffer": 40})
        with TrainLoader(parts, recipe, 3, batch_size=16, num_workers=0) as loader:
            runs[mb] = [torch.cat([x for x, _ in loader.epoch(e)]) for e in range(3)]
    for a, b in zip(runs[0], runs[64]):
        assert torch.equal(a, b)
    assert not torch.equal(runs[0][0], runs[0][1])
    # another transform in the same process (pad 1, not 2) does not take the first one's images
    recipe = full_recipe({**RECIPE, "pad_crop": 1, "shuffle_buffer": 40})
    with TrainLoader(parts, {**recipe, "decode_cache_mb": 64}, 3, batch_size=16, num_workers=0) as cached:
        with TrainLoader(parts, {**recipe, "decode_cache_mb": 0}, 3, batch_size=16, num_workers=0) as plain:
            assert torch.equal(torch.cat([x for x, _ in cached.epoch(0)]), torch.cat([x for x, _ in plain.epoch(0)]))


def test_prob_mix_replaces_real_slots(tmp_path, digits_16):
    images, labels = digits_16
    real = write_digit_shards(tmp_path, images[:40], np.zeros(40, int), 40)
    (tmp_path / "syn").mkdir()
    syn = write_digit_shards(tmp_path / "syn", images[40:70], np.ones(30, int), 30)
    recipe = full_recipe(RECIPE)
    parts = [{"shards": real, "limit": None}, {"shards": syn, "limit": 25}]
    assert epoch_size(parts, {"mode": "prob"}) == 40 and epoch_size(parts) == 65
    _, y = _epoch(parts, recipe, 0, 0, 0)
    assert len(y) == 65 and int(y.sum()) == 25, "concat: the union of the parts"
    _, y = _epoch(parts, recipe, 0, 0, 0, mix={"mode": "prob", "synthetic_prob": 1.0})
    assert len(y) == 40 and int(y.sum()) == 40, "every slot synthetic (the part restarts when it runs out)"


@pytest.mark.parametrize("p", [0.2, 0.5])
@pytest.mark.parametrize("per,workers,epochs,batch", [("sample", 0, 1, 16), ("sample", 2, 1, 16), ("batch", 2, 2, 2)])
def test_prob_mix_draws_synthetic_with_probability_p(tmp_path, digits_16, p, per, workers, epochs, batch):
    """Over >= 400 independent draws (slots, or batches when drawn per batch: batches of 2 over 2
    epochs give 480) the synthetic share is within 3 standard deviations of p (binomial), and both
    kinds of draw occur. The synthetic part is one shard: every worker still draws its share of it."""
    images, labels = digits_16
    real = write_digit_shards(tmp_path, images[:480], np.zeros(480, int), 120)
    (tmp_path / "syn").mkdir()
    syn = write_digit_shards(tmp_path / "syn", images[500:530], np.ones(30, int), 30)
    parts = [{"shards": real, "limit": None}, {"shards": syn, "limit": 25}]
    recipe = full_recipe(RECIPE)
    mix = {"mode": "prob", "synthetic_prob": p, "per": per}
    batches = [y for e in range(epochs) for _, y in
               build_train_loader(parts, recipe, 0, e, mix=mix, batch_size=batch, num_workers=workers)]
    assert sum(len(y) for y in batches) == 480 * epochs >= 400
    if per == "batch":
        assert all(len(set(y.tolist())) == 1 for y in batches), "one draw per batch"
        draws = np.array([int(y[0]) for y in batches])
    else:
        draws = torch.cat(batches).numpy()
    assert len(draws) >= 400, "enough independent draws for a 3 sd bound of about 0.07"
    sd = np.sqrt(p * (1 - p) / len(draws))
    assert abs(draws.mean() - p) <= 3 * sd, f"synthetic share {draws.mean():.3f}, p = {p}, sd {sd:.3f}"
    assert 0 < draws.sum() < len(draws), "both real and synthetic draws"


def test_any_stored_size_becomes_the_input_size(tmp_path):
    big = np.random.default_rng(0).integers(0, 256, (6, 40, 30, 3), dtype=np.uint8)
    shards = write_digit_shards(tmp_path, big, np.arange(6), 6)
    for name in RECIPES:
        recipe = full_recipe({**RECIPES[name], "input_size": 24, "num_workers": 0})
        x, _ = _epoch([{"shards": shards, "limit": None}], recipe, 0, 0, 0)
        assert x.shape == (6, 3, 24, 24)
        xe, _ = next(iter(build_eval_loader(shards, recipe, 8)))
        assert xe.shape == (6, 3, 24, 24)


def test_evaluate_logits_on_known_values():
    logits = np.array([[5.0, 0, 0], [0, 5.0, 0], [5.0, 0, 0], [0, 0, 5.0]])
    labels = np.array([0, 1, 1, 2])
    metrics, per_class = evaluate_logits(logits, labels, 3)
    assert metrics["top1"] == pytest.approx(0.75)
    assert metrics["mean_class_acc"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert per_class["count"].tolist() == [1, 2, 1]
    assert per_class.loc[1, "loss"] > per_class.loc[0, "loss"]


def test_accumulated_batches_equal_one_pass():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(50, 4)), rng.integers(0, 4, 50)
    whole, pc_whole = evaluate_logits(logits, labels, 4)
    acc = Accumulator(4)
    for s in range(0, 50, 7):
        acc.update(torch.as_tensor(logits[s : s + 7]), torch.as_tensor(labels[s : s + 7]))
    parts, pc_parts = acc.compute()
    assert parts == pytest.approx(whole)
    assert np.allclose(pc_parts["loss"], pc_whole["loss"])


def test_class_subset_eval_masks_logits():
    """ImageNet-R/-A: only the covered classes compete, so a higher logit elsewhere is ignored."""
    logits = np.array([[9.0, 2.0, 1.0, 0.0], [9.0, 0.0, 3.0, 0.0]])
    labels = np.array([1, 2])
    full, _ = evaluate_logits(logits, labels, 4)
    sub, pc = evaluate_logits(logits, labels, 4, classes=[1, 2])
    assert full["top1"] == 0.0 and sub["top1"] == 1.0
    expected = -np.log(np.exp(2.0) / (np.exp(2.0) + np.exp(1.0)))
    assert pc.loc[1, "loss"] == pytest.approx(expected)
    assert np.isnan(pc.loc[0, "accuracy"]) and pc["count"].tolist() == [0, 1, 1, 0]
    with pytest.raises(ValueError, match="label 0"):
        evaluate_logits(logits, np.array([0, 2]), 4, classes=[1, 2])


def test_recipes_resolve_and_validate():
    from synthscale.study.config import ConfigError, check_config, validate_schema
    import yaml

    assert resolve_recipe({"recipe": "imagenet-vit-b16", "lr": 0.1})["lr"] == 0.1
    assert resolve_recipe({})["recipe"] == "digits"
    r = resolve_recipe({"recipe": "imagenet-vit-b16"})
    assert r["mean"] == [0.5] * 3 and r["input_size"] == 224 and r["crop_pct"] == 0.875
    cfg = yaml.safe_load(open("config.yaml"))
    for name, row in RECIPES.items():  # every row is a valid `train` section
        validate_schema({**cfg, "train": {**row, "recipe": name}})
    checked = check_config({**cfg, "train": {"recipe": "imagenet-resnet50", "epochs": 3}})
    assert checked["train"]["arch"] == "resnet50" and checked["train"]["epochs"] == 3
    assert check_config(cfg)["train"]["input_size"] == cfg["dataset"]["image_size"]
    with pytest.raises(ConfigError, match="config key train.recipe: unknown recipe 'nope'"):
        check_config({**cfg, "train": {"recipe": "nope"}})
    with pytest.raises(ConfigError, match="config key train.micro_batch_size"):
        check_config({**cfg, "train": {"batch_size": 64, "micro_batch_size": 24}})
    with pytest.raises(ConfigError, match="config key train.seeds"):
        check_config({**cfg, "train": {"seeds": [0, 0]}})


def test_seeds_are_a_grid_axis():
    """Each replicate seed is its own training target; a model named without a seed is the first seed's.
    (The jobs a dry run plans per seed: tests/workflow/test_seeds_workflow.py.)"""
    from synthscale.study.config import load_config
    from synthscale.study.plan import Plan

    cfg = load_config("config.yaml")
    plan = Plan({**cfg, "train": {**cfg["train"], "seeds": [4, 0], "real_seeds": None}})
    assert plan.model("real", "30").endswith("/real/n30/s4/model.safetensors"), "no seed: the first"
    assert plan.model("real", "30", 0).endswith("/real/n30/s0/model.safetensors")
    second = str(cfg["n_images"][1])
    assert plan.seed_runs("real")[:3] == [("30", 4), ("30", 0), (second, 4)]


def test_fast_identity_path_equals_timm(digits_16):
    """The digits recipe's short-cut gives timm's transform's output, then a black-padded shift."""
    from synthscale.data.loader import decode
    from synthscale.data.transforms import seeded_apply, train_transform

    images, _ = digits_16
    recipe = full_recipe({**RECIPE, "pad_crop": 0})
    tf = train_transform(recipe)
    assert tf.identity and not tf.uses_torch and not tf.uses_numpy
    im = decode(images[7])
    fast = tf(im)
    slow = tf.tf(im)  # timm's create_transform output
    assert torch.allclose(fast, slow, atol=1e-6)
    tf2 = train_transform({**recipe, "pad_crop": 2})
    shifts = set()
    for seed in range(12):
        x = seeded_apply(tf2, im, seed)
        assert torch.equal(x, seeded_apply(tf2, im, seed))
        padded = torch.nn.functional.pad(slow, (2, 2, 2, 2), value=-1.0)
        match = [(a, b) for a in range(5) for b in range(5) if torch.allclose(padded[:, a : a + 16, b : b + 16], x, atol=1e-6)]
        assert match, "every output is a shift of the image with black padding"
        shifts.add(match[0])
    assert len(shifts) > 3
    big = decode(np.zeros((20, 20, 1), np.uint8))
    assert tf2(big).shape == (3, 16, 16), "other sizes take timm's path"


def test_gpu_recipe_paths_run_on_cpu(tmp_path, digit_shards):
    """bf16 autocast, channels_last, mixup/cutmix with soft targets, SGD and gradient accumulation."""
    torch.set_num_threads(1)  # other tests' scripts pin their own thread counts
    torch.manual_seed(0)
    recipe = {**RESOLVED_VIT_LIKE, "epochs": 1, "min_steps": 3, "batch_size": 16, "micro_batch_size": 8}
    log = train_model([{"shards": digit_shards[0], "limit": 48}], 10, recipe, 0, tmp_path / "m.safetensors", tmp_path / "log.csv", progress=False)
    assert log["step"].tolist() == [3] and np.isfinite(log["train_loss"]).all()
    model, meta = load_classifier(tmp_path / "m.safetensors")
    assert meta["recipe"] == "imagenet-resnet50" and all(torch.isfinite(p).all() for p in model.parameters())


RESOLVED_VIT_LIKE = {
    "recipe": "imagenet-resnet50", "arch": "resnet18", "model_kwargs": {"channels": [8, 16, 32, 64]},
    # 32 px, not 16: at 16 px layer4's stride-2 conv runs on a 1x1 map, where torch's CPU bf16 autocast
    # backward left NaN or garbage in layer4.0.conv1's weights in about half the runs (torch 2.15)
    "input_size": 32, "num_workers": 0, "amp": True, "channels_last": True, "mixup": 0.8, "cutmix": 1.0,
    "auto_augment": "rand-m9-mstd0.5", "re_prob": 0.25, "hflip": 0.5, "optimizer": "sgd", "lr": 0.01,
}


def test_a_last_batch_of_one_image_trains(tmp_path, digit_shards):
    """N = 65 at batch 64: the epoch's last batch holds one image, which BatchNorm cannot normalise by
    its own statistics; it trains with the layers' running statistics instead of failing."""
    torch.set_num_threads(1)
    recipe = full_recipe({**RECIPE, "epochs": 2, "min_steps": 1})
    log = train_model([{"shards": digit_shards[0], "limit": 65}], 10, recipe, 0, tmp_path / "m.safetensors", tmp_path / "log.csv", progress=False)
    assert log["step"].tolist() == [2, 4] and np.isfinite(log["train_loss"]).all()
    model, _ = load_classifier(tmp_path / "m.safetensors")
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(torch.isfinite(m.running_var).all() for m in bns)


def test_compiled_training_runs_on_cpu(tmp_path, digit_shards):
    """`compile: true` wraps the model in torch.compile (inductor); on CPU it compiles too, and the saved
    weights are the plain module's (no `_orig_mod.` prefixes), loadable without torch.compile."""
    torch.set_num_threads(1)
    torch._dynamo.reset()
    recipe = full_recipe({**RECIPE, "model_kwargs": {"channels": [8, 16, 32, 64]}, "epochs": 1, "min_steps": 2,
                          "batch_size": 32, "compile": True})
    log = train_model([{"shards": digit_shards[0], "limit": 64}], 10, recipe, 0, tmp_path / "m.safetensors", tmp_path / "log.csv", progress=False)
    assert log["step"].tolist() == [2] and np.isfinite(log["train_loss"]).all()
    model, meta = load_classifier(tmp_path / "m.safetensors")
    assert not any("_orig_mod" in k for k in model.state_dict())
    with torch.no_grad():
        assert model.eval()(torch.zeros(2, 3, 16, 16)).shape == (2, 10)


def test_a_diverging_run_fails_and_saves_nothing(tmp_path, digit_shards):
    """A loss that turns inf or NaN stops the job with an error that names train.lr, and no model file
    is written (Snakemake would otherwise take the NaN weights as the run's output)."""
    torch.set_num_threads(1)
    recipe = full_recipe({**RECIPE, "amp": False, "mixup": 0.0, "cutmix": 0.0, "epochs": 3, "min_steps": 8,
                          "lr": 1e12, "warmup_frac": 0.0})
    with pytest.raises(FloatingPointError, match=r"train\.lr"):
        train_model([{"shards": digit_shards[0], "limit": 64}], 10, recipe, 0, tmp_path / "m.safetensors",
                    tmp_path / "log.csv", progress=False)
    assert not (tmp_path / "m.safetensors").exists()


def test_adamw_decays_no_norm_bias_or_position_embedding():
    """DeiT's AdamW (and timm's training script) decays weight matrices and kernels only: norms,
    biases (1-D), a ViT's position embedding and class token get none. SGD decays everything."""
    from synthscale.classifier.train import create_classifier, make_optimizer

    vit = create_classifier("vit_tiny_patch16_224", 10, {"img_size": 16, "patch_size": 4, "embed_dim": 32,
                                                         "depth": 1, "num_heads": 2})
    recipe = full_recipe({**RECIPE, "optimizer": "adamw", "weight_decay": 0.05})
    decay = {id(p): g["weight_decay"] for g in make_optimizer(vit, recipe).param_groups for p in g["params"]}
    names = dict(vit.named_parameters())
    assert len(decay) == len(names)
    free = {n for n, p in names.items() if p.ndim == 1 or n in ("pos_embed", "cls_token")}
    assert {"pos_embed", "cls_token", "norm.weight", "blocks.0.attn.qkv.bias"} <= free
    assert {n for n, p in names.items() if decay[id(p)] == 0.0} == free
    assert all(decay[id(p)] == 0.05 for n, p in names.items() if n not in free)
    sgd = make_optimizer(vit, {**recipe, "optimizer": "sgd"})
    assert all(g["weight_decay"] == 0.05 for g in sgd.param_groups)


def test_training_reads_the_loss_at_sync_points_only(monkeypatch, tmp_path, digit_shards):
    """No host sync per step: the loss and accuracy sums stay on the device and are read at the
    epoch's end (16 steps here), not with .item() per micro-batch; a diverging run still fails
    (test_a_diverging_run_fails_and_saves_nothing)."""
    import sys

    import synthscale.classifier.train

    torch.set_num_threads(1)
    reads = []

    def counted(name):  # reads made by the training loop itself (torch's optimizers read CPU step counts)
        orig = getattr(torch.Tensor, name)

        def read(self, *a, **k):
            if sys._getframe(1).f_code.co_filename == synthscale.classifier.train.__file__:
                reads.append(name)
            return orig(self, *a, **k)

        return read

    for name in ("item", "tolist", "__float__"):  # (not __bool__: the final check of the weights)
        monkeypatch.setattr(torch.Tensor, name, counted(name))
    recipe = full_recipe({**RECIPE, "epochs": 1, "min_steps": 0, "batch_size": 16, "micro_batch_size": 8})
    log = train_model([{"shards": digit_shards[0], "limit": 256}], 10, recipe, 0, tmp_path / "m.safetensors",
                      tmp_path / "log.csv", progress=False)
    assert log["step"].tolist() == [16] and np.isfinite(log["train_loss"]).all()
    assert len(reads) <= 3, f"{len(reads)} reads of device values in 16 steps of 2 micro-batches: {reads}"


def test_workers_share_shards_and_are_capped_by_full_batches(tmp_path, digits_16):
    """3 shards and 8 workers: every worker reads its own range of the samples, so all 8 start (at
    batch 8: 11 full batches) and the epoch still holds every image once; only workers beyond the
    full batches of the epoch are left out (batch 16: 5)."""
    from synthscale.data.loader import useful_workers

    images, labels = digits_16
    shards = write_digit_shards(tmp_path, images[:90], labels[:90], 30)
    recipe = full_recipe({**RECIPE, "pad_crop": 2, "shuffle_buffer": 10})
    parts = [{"shards": shards, "limit": None}]
    assert useful_workers(parts, 8, batch_size=8) == 8 and useful_workers(parts, 8, batch_size=16) == 5
    assert useful_workers(parts, 2, batch_size=16) == 2
    assert useful_workers([{"shards": shards, "limit": 45}], 8, batch_size=16) == 2, "the first N only"
    assert useful_workers([{"arrays": (images[:90], labels[:90]), "limit": None}], 8, batch_size=64) == 8
    loader = build_train_loader(parts, recipe, 3, 0, batch_size=8, num_workers=8)
    assert loader.num_workers == 8
    ys = torch.cat([y for _, y in loader])
    assert len(ys) == 90 and torch.equal(torch.sort(ys).values, torch.sort(torch.as_tensor(labels[:90])).values)
    assert build_train_loader(parts, recipe, 3, 0, batch_size=16, num_workers=8).num_workers == 5


def test_cuda_speed_switches_leave_torch_precision_readable(monkeypatch):
    """A CUDA run turns on cuDNN autotuning and TF32 matmuls and convolutions, through an API that keeps
    torch.get_float32_matmul_precision() (read by inductor) answering instead of raising."""
    from synthscale.classifier.train import enable_fast_cuda_math

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)  # restored after
    old = torch.get_float32_matmul_precision()
    try:
        enable_fast_cuda_math()
        assert torch.backends.cudnn.benchmark and torch.backends.cudnn.allow_tf32
        assert torch.get_float32_matmul_precision() == "high" and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.set_float32_matmul_precision(old)
    assert torch.get_float32_matmul_precision() == old
