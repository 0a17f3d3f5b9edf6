"""Fine-tuned generators (Azizi et al.): a tiny Stable Diffusion built from configs with random weights and
the workflow's own pixel pipeline, fine-tuned on real digit images streamed from shards."""
import json

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from synthscale.study.config import ConfigError, check_config, load_schema
from synthscale.data.real import write_split
from synthscale.generation.finetune import (
    LOG,
    draw_caption,
    epoch_loader,
    finetune_generator,
    load_base_pipeline,
)
from synthscale.generation.folders import read_meta
from synthscale.generation.tinygen import PixelTextToImagePipeline, build_tiny_pipeline
from synthscale.preemption import Preempted
from helpers.tiny_pipelines import build_sdxl
from helpers.training import safetensors_parts

torch.set_num_threads(1)

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
PROMPTS = [[[n] for n in NAMES], [[f"a photo of the digit {n}"] for n in NAMES]]
ARCH = dict(unet_widths=[16, 32], layers_per_block=1, attention_head_dim=8, norm_groups=8,
            text_width=32, text_layers=1, text_heads=2, max_tokens=16)


def recipe(**over):
    """The schema's defaults for generators[].finetune, with test overrides."""
    props = load_schema()["properties"]["generators"]["items"]["properties"]["finetune"]["properties"]
    return {k: v["default"] for k, v in props.items() if "default" in v} | over


@pytest.fixture(scope="module")
def shards(tmp_path_factory, digits_16):
    images, labels = digits_16
    folder = tmp_path_factory.mktemp("real") / "train"
    names = write_split(folder, images[:48], labels[:48], shard_size=16)
    return [folder / n for n in names]


def falls(log, k=8, by=0.8):
    return log["loss"].iloc[-k:].mean() < by * log["loss"].iloc[:k].mean()


def generate(pipe, seed=0):
    pipe.set_progress_bar_config(disable=True)
    out = pipe(["three"], num_inference_steps=2, guidance_scale=2.0, output_type="np",
               generator=torch.Generator().manual_seed(seed))
    return out.images


def test_captions_are_drawn_per_image_deterministically():
    a = [draw_caption(PROMPTS, 3, f"{i:08d}", 0, 0, 0.2) for i in range(200)]
    assert a == [draw_caption(PROMPTS, 3, f"{i:08d}", 0, 0, 0.2) for i in range(200)]
    assert a != [draw_caption(PROMPTS, 3, f"{i:08d}", 0, 1, 0.2) for i in range(200)]
    assert set(a) == {"", "three", "a photo of the digit three"}
    assert 0.1 < a.count("") / len(a) < 0.3


def test_epoch_stream_is_seeded_and_covers_the_split(shards):
    r = recipe(batch_size=8, shuffle_buffer=16)
    first = [x for x, _ in epoch_loader(shards, PROMPTS, r, 0, 0, 16, "RGB")]
    again = [x for x, _ in epoch_loader(shards, PROMPTS, r, 0, 0, 16, "RGB")]
    other = [x for x, _ in epoch_loader(shards, PROMPTS, r, 0, 1, 16, "RGB")]
    assert len(first) == 6 and first[0].shape == (8, 3, 16, 16)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    # every image once per epoch: the same multiset of images in another order
    assert torch.allclose(torch.cat(first).sum(0), torch.cat(other).sum(0), atol=1e-3)


def test_full_finetune_loss_falls_and_saves_a_pipeline(sd_dir, shards, tmp_path):
    out = tmp_path / "ft"
    log = finetune_generator(str(sd_dir), shards, PROMPTS[:1], recipe(steps=40, batch_size=8, lr=2e-3),
                             0, out, progress=False)
    assert len(log) == 40 and falls(log), log["loss"].tolist()
    meta = read_meta(out)
    assert meta["base"] == str(sd_dir) and meta["lora"] is False and meta["mode"] == "full"
    assert (out / "model_index.json").exists() and (out / LOG).exists()
    pipe = StableDiffusionPipeline.from_pretrained(out, use_safetensors=True)
    base = StableDiffusionPipeline.from_pretrained(sd_dir, use_safetensors=True)
    img, img0 = generate(pipe), generate(base)
    assert img.shape == (1, 16, 16, 3) and np.isfinite(img).all()
    assert not np.allclose(img, img0), "fine-tuning must change what the pipeline draws"


def test_lora_finetune_saves_adapters_that_load_onto_the_base(sd_dir, shards, tmp_path):
    out = tmp_path / "lora"
    r = recipe(mode="lora", steps=40, batch_size=8, lr=3e-2, lora_rank=4)
    log = finetune_generator(str(sd_dir), shards, PROMPTS, r, 0, out, progress=False)
    # the same seeded run at lr = 0 sees the same batches, captions, timesteps and noise: any gap is training
    frozen = finetune_generator(str(sd_dir), shards, PROMPTS, r | {"lr": 0.0}, 0, tmp_path / "lr0",
                                progress=False)
    assert np.allclose(log["loss"].iloc[0], frozen["loss"].iloc[0], rtol=1e-5), "the first step is untrained"
    # paired step by step (an untrained run gives exactly 1): the second half is lower at every step
    ratio = (log["loss"] / frozen["loss"]).iloc[20:]
    assert (ratio < 0.97).all() and ratio.mean() < 0.95, ratio.round(3).tolist()
    meta = read_meta(out)
    assert meta["lora"] is True and meta["base"] == str(sd_dir)
    assert (out / "pytorch_lora_weights.safetensors").exists() and not (out / "unet").exists()
    base = StableDiffusionPipeline.from_pretrained(meta["base"], use_safetensors=True)
    img0 = generate(base)
    base.load_lora_weights(out)
    img = generate(base)
    assert img.shape == (1, 16, 16, 3) and np.isfinite(img).all()
    assert not np.allclose(img, img0), "the LoRA weights must change what the base draws"
    with pytest.raises(ValueError, match="LoRA weights"):
        load_base_pipeline(out)


@pytest.mark.parametrize("mode, ema", [("full", None), ("lora", None), ("full", 0.9)])
def test_resume_after_a_stop_is_bit_identical(sd_dir, shards, tmp_path, mode, ema):
    # 48 images in batches of 8: 6 per epoch, so 9 steps cross an epoch and the stop at 7 is inside one
    r = recipe(mode=mode, steps=9, batch_size=8, lr=1e-3, lora_rank=4, shuffle_buffer=8, ema_decay=ema)
    finetune_generator(str(sd_dir), shards, PROMPTS, r, 3, tmp_path / "straight", progress=False)
    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(Preempted):
        finetune_generator(str(sd_dir), shards, PROMPTS, r, 3, tmp_path / "resumed",
                           checkpoint_path=ckpt, progress=False, stop_after_steps=7)
    assert ckpt.exists() and not (tmp_path / "resumed").exists()
    log = finetune_generator(str(sd_dir), shards, PROMPTS, r, 3, tmp_path / "resumed",
                             checkpoint_path=ckpt, progress=False)
    assert len(log) == 9 and not ckpt.exists()
    weights = "unet/diffusion_pytorch_model.safetensors" if mode == "full" else "pytorch_lora_weights.safetensors"
    a, b = safetensors_parts(tmp_path / "straight" / weights), safetensors_parts(tmp_path / "resumed" / weights)
    assert a == b, "a resumed run must reach the same weights"


def test_a_resume_under_another_worker_count_is_refused_naming_the_key(sd_dir, shards, tmp_path):
    """The loader's worker count fixes the batch order (each worker reads its own shards through its
    copy of the shuffle buffer), and a resume skips the batches it trained on: under another count it
    would skip other images. A checkpoint records the count; a resume with another count stops, naming
    the generator's finetune.num_workers, and leaves the checkpoint; set back, it resumes to the
    uninterrupted run's weights. No worker and one worker read one stream in one order (the same
    batches, bit for bit): switching between them resumes to the same weights."""
    r = recipe(mode="lora", steps=9, batch_size=8, lr=1e-3, lora_rank=4, shuffle_buffer=8)
    weights = "pytorch_lora_weights.safetensors"
    ckpt = tmp_path / "ckpt.pt"

    def run(out, workers, **kw):
        return finetune_generator(str(sd_dir), shards, PROMPTS, {**r, "num_workers": workers}, 3, tmp_path / out,
                                  progress=False, provenance={"generator": "ft"}, **kw)

    for stopped, resumed in ((2, 1), (0, 1)):
        run(f"straight{stopped}", stopped)
        with pytest.raises(Preempted):
            run(f"resumed{stopped}", stopped, checkpoint_path=ckpt, stop_after_steps=7)
        if stopped == 2:
            with pytest.raises(ValueError, match=r"config key generators\.ft\.finetune\.num_workers: the checkpoint "
                                                 r".*ckpt\.pt was written by this run with 2 loader worker\(s\) a "
                                                 r"rank, and it now gets 1; .* back to 2 to resume, or delete"):
                run(f"resumed{stopped}", resumed, checkpoint_path=ckpt)
            assert ckpt.exists() and not (tmp_path / f"resumed{stopped}").exists()
            resumed = stopped
        run(f"resumed{stopped}", resumed, checkpoint_path=ckpt)
        assert not ckpt.exists()
        a = safetensors_parts(tmp_path / f"straight{stopped}" / weights)
        assert a == safetensors_parts(tmp_path / f"resumed{stopped}" / weights), (stopped, resumed)
    for epoch in (0, 1):
        none, one = ([(x, t) for x, t in epoch_loader(shards, PROMPTS, {**r, "num_workers": w}, 3, epoch, 16, "RGB")]
                     for w in (0, 1))
        assert len(none) == len(one) == 6
        assert all(torch.equal(x0, x1) and t0 == t1 for (x0, t0), (x1, t1) in zip(none, one))


def test_periodic_checkpoints_resume_to_the_uninterrupted_weights(sd_dir, shards, tmp_path, monkeypatch):
    """finetune.checkpoint_minutes saves a checkpoint whenever the clock says so (here: after every
    step but the last), not only on a signal; a job killed without warning resumes from the last one
    and reaches the uninterrupted run's weights and log bit for bit."""
    import shutil

    import synthscale.generation.finetune as ft

    saved = {}
    save = ft.save_checkpoint

    def kept(path, state):  # each periodic checkpoint, kept under its step
        save(path, state)
        saved[state["step"]] = tmp_path / f"at{state['step']}.pt"
        shutil.copy(path, saved[state["step"]])

    monkeypatch.setattr(ft, "save_checkpoint", kept)
    r = recipe(mode="lora", steps=9, batch_size=8, lr=1e-3, lora_rank=4, shuffle_buffer=8)
    ckpt = tmp_path / "ckpt.pt"
    straight = finetune_generator(str(sd_dir), shards, PROMPTS, {**r, "checkpoint_minutes": 1e-9}, 3,
                                  tmp_path / "straight", checkpoint_path=ckpt, progress=False)
    assert sorted(saved) == list(range(1, 9)), "a checkpoint after every step but the last"
    assert not ckpt.exists(), "the finished run removes its checkpoint"
    shutil.copy(saved[7], ckpt)  # killed after step 7 (inside the second epoch): the last checkpoint
    resumed = finetune_generator(str(sd_dir), shards, PROMPTS, r, 3, tmp_path / "resumed",
                                 checkpoint_path=ckpt, progress=False)
    weights = "pytorch_lora_weights.safetensors"
    a, b = safetensors_parts(tmp_path / "straight" / weights), safetensors_parts(tmp_path / "resumed" / weights)
    assert a == b, "a run resumed from a periodic checkpoint must reach the same weights"
    assert straight.drop(columns="seconds").equals(resumed.drop(columns="seconds"))


def test_pixel_pipeline_fine_tunes_in_full_mode(shards, tmp_path):
    base = tmp_path / "tiny"
    build_tiny_pipeline(ARCH, image_size=16, channels=1, seed=0).save_pretrained(base, safe_serialization=True)
    out = tmp_path / "tiny-ft"
    log = finetune_generator(str(base), shards, PROMPTS[:1], recipe(steps=30, batch_size=8, lr=2e-3),
                             0, out, progress=False)
    assert falls(log), log["loss"].tolist()
    pipe = PixelTextToImagePipeline.from_pretrained(out, use_safetensors=True)
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "PixelTextToImagePipeline"
    before = PixelTextToImagePipeline.from_pretrained(base, use_safetensors=True)
    assert not torch.equal(pipe.unet.conv_in.weight, before.unet.conv_in.weight)
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight,
                       before.text_encoder.get_input_embeddings().weight), "the text encoder stays frozen"
    # LoRA adapters over the pixel pipeline load through the one generation path (base, then LoRA)
    from synthscale.generation.pipelines import load_generator

    finetune_generator(str(base), shards, PROMPTS[:1], recipe(mode="lora", steps=3, batch_size=8, lr=2e-3),
                       0, tmp_path / "lora", progress=False)
    lora = load_generator(tmp_path / "lora")
    assert not torch.equal(lora.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_q.weight,
                           before.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_q.weight)


def _cfg(*generators):
    return {"dataset": {"name": "d", "kind": "digits"}, "generators": list(generators),
            "guidance": [1.0], "strategies": ["classname"], "n_images": [10]}


TRAINED = {"name": "tiny", "kind": "trained"}


@pytest.mark.parametrize("gen, key", [
    ({"name": "ft", "kind": "finetuned"}, "generators.ft.base"),
    ({"name": "ft", "kind": "finetuned", "base": "nope"}, "generators.ft.base"),
    ({"name": "ft", "kind": "finetuned", "base": "./missing-folder"}, "generators.ft.base"),
    ({"name": "ft", "kind": "finetuned", "base": "ft"}, "generators.ft.base"),
    ({"name": "ft", "kind": "finetuned", "base": "tiny", "finetune": {"caption_strategies": ["nah"]}},
     "generators.ft.finetune.caption_strategies"),
    ({"name": "ft", "kind": "finetuned", "base": "tiny", "finetune": {"stepz": 3}}, "generators.2.finetune"),
    ({"name": "ft", "kind": "pretrained", "source": "a/b", "base": "tiny"}, "generators.ft.base"),
    ({"name": "ft", "kind": "finetuned", "base": "lo"}, "generators.ft.base"),
    ({"name": "ft", "kind": "pretrained", "source": "a/b", "train_shift": {"kind": "rotate"}},
     "generators.ft.train_shift"),
])
def test_config_errors_name_the_key(gen, key):
    with pytest.raises(ConfigError, match=f"config key {key}"):
        check_config(_cfg(TRAINED, {"name": "lo", "kind": "finetuned", "base": "a/b", "finetune": {"mode": "lora"}}, gen))


def test_finetuned_config_fills_the_recipe(sd_dir):
    cfg = check_config(_cfg(TRAINED, {"name": "ft", "kind": "finetuned", "base": "tiny"},
                            {"name": "ft2", "kind": "finetuned", "base": str(sd_dir)},
                            {"name": "ft3", "kind": "finetuned", "base": "org/some-model"},
                            {"name": "sd", "kind": "pretrained", "source": "org/sd"},
                            {"name": "ft4", "kind": "finetuned", "base": "sd", "finetune": {"mode": "lora"}}))
    ft = cfg["generators"][1]["finetune"]
    assert ft["mode"] == "full" and ft["caption_strategies"] == ["classname"]
    assert "finetune" in cfg["resources"]


def test_report_states_from_the_numbers_whether_fine_tuning_helped():
    import pandas as pd

    from synthscale.analysis.finetune_report import compare_finetuned, describe_generator, finetune_pairs, finetune_sentences

    gens = [{"name": "tiny", "kind": "trained", "train_shift": {"kind": "thicken", "size": 3}},
            {"name": "tiny-ft", "kind": "finetuned", "base": "tiny", "finetune": {"mode": "full", "steps": 300}},
            {"name": "sd-ft", "kind": "finetuned", "base": "org/sd"}]
    pairs = finetune_pairs(gens)
    assert pairs == {"tiny-ft": "tiny"}
    rows = [  # FID falls at both guidance values; CAS rises at 1.0 but falls at 2.0
        ("tiny", 1.0, "classname", 40.0, 0.5), ("tiny", 1.0, "templates", 60.0, 0.3),
        ("tiny-ft", 1.0, "classname", 20.0, 0.7), ("tiny-ft", 1.0, "templates", 30.0, 0.5),
        ("tiny-ft", 1.0, "description", 1.0, 0.99),  # the base lacks it: not compared
        ("tiny", 2.0, "classname", 30.0, 0.8), ("tiny-ft", 2.0, "classname", 25.0, 0.6),
    ]
    q = pd.DataFrame(rows, columns=["generator", "guidance", "strategy", "fid", "cas"])
    cmp = compare_finetuned(q, pairs)
    assert list(cmp["guidance"]) == [1.0, 2.0]
    assert cmp.loc[0, "fid_base"] == 50.0 and cmp.loc[0, "fid_finetuned"] == 25.0
    assert list(cmp["fid_better"]) == [True, True] and list(cmp["cas_better"]) == [True, False]
    text = finetune_sentences(cmp, {"tiny": describe_generator(gens[0])})
    assert "thickened" in text[0]
    assert text[1] == "At guidance 1, fine-tuning lowered FID from 50 to 25 and raised CAS from 0.4 to 0.6."
    assert text[2] == "At guidance 2, fine-tuning lowered FID from 30 to 25 and lowered CAS from 0.8 to 0.6."
    assert "lowered FID at 2 of 2" in text[3] and "raised CAS at 1 of 2" in text[3]
    assert "Azizi et al. found it did at every one" in text[3]
    # when both improve everywhere, the sentence says it agrees with the paper; missing CAS is named
    q2 = q[q["guidance"] == 1.0].drop(columns="cas").assign(cas=np.nan)
    text2 = finetune_sentences(compare_finetuned(q2, pairs))
    assert "CAS is not available" in text2[1] and text2[-1].endswith("as Azizi et al. found.")
    assert "nothing is compared" in finetune_sentences(compare_finetuned(q, {}))[0]
    from synthscale.analysis.finetune_report import finetune_findings

    assert finetune_findings(q, gens) == text


def test_azizi_preset_is_a_valid_study():
    """configs/azizi-imagenet.yaml passes every check but the ImageNet paths, which only a cluster has."""
    import yaml

    from synthscale.study.config import SCHEMA_PATH

    raw = yaml.safe_load((SCHEMA_PATH.parent.parent / "configs" / "azizi-imagenet.yaml").read_text())
    with pytest.raises(ConfigError, match="config key dataset.train_dir"):
        check_config(raw)
    raw["dataset"] = {"name": "digits", "kind": "digits"}
    raw["quality"] = {}  # the judge and Inception weight files live on the cluster
    cfg = check_config(raw)
    ft = {g["name"]: g for g in cfg["generators"]}["sd15-in1k"]
    assert ft["base"] == "sd15" and ft["finetune"]["caption_strategies"] == ["classname"]
    assert 1.25 in cfg["guidance"] and max(cfg["n_images"]) >= 2 * 1_281_167
    # DDP over 8 GPUs, each an equal share of the batch
    assert cfg["resources"]["finetune"]["gpu"] == 8 and ft["finetune"]["batch_size"] % 8 == 0


def test_sdxl_pipeline_fine_tunes_with_lora(shards, tmp_path):
    """SDXL: two text encoders, a pooled embedding and size conditions (added_cond_kwargs)."""
    from diffusers import StableDiffusionXLPipeline

    base = build_sdxl(tmp_path / "tiny-sdxl")
    out = tmp_path / "sdxl-lora"
    log = finetune_generator(str(base), shards, PROMPTS, recipe(mode="lora", steps=6, batch_size=8, lr=1e-2),
                             0, out, progress=False)
    assert len(log) == 6 and np.isfinite(log["loss"]).all()
    loaded = StableDiffusionXLPipeline.from_pretrained(base, use_safetensors=True)
    before = generate(loaded)
    loaded.load_lora_weights(out)
    after = generate(loaded)
    assert after.shape == (1, 16, 16, 3) and not np.allclose(before, after)


def _capture_pipeline(monkeypatch):
    """Keep the pipeline finetune_generator trains (its denoiser as trained, before any saving)."""
    import synthscale.generation.finetune as ft

    held, load = {}, ft.load_base_pipeline
    monkeypatch.setattr(ft, "load_base_pipeline", lambda *a, **k: held.setdefault("pipe", load(*a, **k)))
    return held


def test_loaded_lora_reproduces_the_trained_denoiser(sd_dir, shards, tmp_path, monkeypatch):
    """lora_alpha != rank: the adapter metadata must carry the scale alpha / rank to load_lora_weights."""
    from synthscale.generation.pipelines import load_generator

    held = _capture_pipeline(monkeypatch)
    out = tmp_path / "lora"
    finetune_generator(str(sd_dir), shards, PROMPTS,
                       recipe(mode="lora", steps=4, batch_size=8, lr=3e-2, lora_rank=4, lora_alpha=16),
                       0, out, progress=False)
    trained = held["pipe"].unet.eval()
    gen = torch.Generator().manual_seed(5)
    x, h = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 16, 32, generator=gen)
    t = torch.tensor([10, 600])
    with torch.no_grad():
        want = trained(x, t, encoder_hidden_states=h).sample
        base = StableDiffusionPipeline.from_pretrained(sd_dir, use_safetensors=True)
        plain = base.unet(x, t, encoder_hidden_states=h).sample
        base.load_lora_weights(out)
        got = base.unet(x, t, encoder_hidden_states=h).sample
        fused = load_generator(out).unet(x, t, encoder_hidden_states=h).sample
    assert (want - plain).abs().max() > 1e-3, "the adapters must matter for the comparison to mean anything"
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(fused, want, atol=1e-5, rtol=0)


def test_unknown_prediction_type_is_an_error(sd_dir, shards, tmp_path):
    import shutil

    base = tmp_path / "sd-flow"
    shutil.copytree(sd_dir, base)
    cfg_path = base / "scheduler" / "scheduler_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps(cfg | {"prediction_type": "flow"}))
    with pytest.raises(ValueError, match="prediction_type 'flow'"):
        finetune_generator(str(base), shards, PROMPTS, recipe(steps=2, batch_size=8), 0, tmp_path / "o",
                           progress=False)
    assert not (tmp_path / "o").exists()


def test_ema_saves_the_moving_average_of_the_trained_weights(sd_dir, shards, tmp_path, monkeypatch):
    """Full fine-tuning with ema_decay: the saved denoiser is the EMA of the weights after each step,
    computed here from the recorded trajectory with EMAModel's documented warmup min(d, (1+t)/(10+t))."""
    from safetensors.torch import load_file

    held = _capture_pipeline(monkeypatch)
    trail = []
    from torch.optim.optimizer import register_optimizer_step_post_hook

    hook = register_optimizer_step_post_hook(
        lambda opt, args, kwargs: trail.append(held["pipe"].unet.conv_in.weight.detach().clone()))
    decay, out = 0.7, tmp_path / "ema"
    try:
        finetune_generator(str(sd_dir), shards, PROMPTS[:1],
                           recipe(steps=8, batch_size=8, lr=2e-3, ema_decay=decay), 0, out, progress=False)
    finally:
        hook.remove()
    assert len(trail) == 8
    ema = trail[0].numpy().astype(np.float64)  # step 1: decay 0, the EMA is the weights
    for t, w in enumerate(trail[1:], start=1):
        d = min(decay, (1 + t) / (10 + t))
        ema = d * ema + (1 - d) * w.numpy()
    saved = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")["conv_in.weight"].numpy()
    assert not np.allclose(saved, trail[-1].numpy(), atol=1e-6), "the EMA must differ from the last weights"
    np.testing.assert_allclose(saved, ema, atol=1e-6)


def test_bf16_frozen_parts_encode_and_are_saved_as_loaded(sd_dir, shards, tmp_path, monkeypatch):
    """The GPU path (frozen VAE and text encoder in bf16), forced on the CPU: it trains, and a full save
    writes the frozen parts bit for bit as loaded, not rounded through bf16."""
    from safetensors.torch import load_file

    import synthscale.generation.finetune as ft

    r = recipe(steps=3, batch_size=8, lr=1e-3)
    fp32 = finetune_generator(str(sd_dir), shards, PROMPTS[:1], r, 0, tmp_path / "fp32", progress=False)
    monkeypatch.setattr(ft, "frozen_parts_dtype", lambda device: torch.bfloat16)
    out = tmp_path / "bf16"
    log = finetune_generator(str(sd_dir), shards, PROMPTS[:1], r, 0, out, progress=False)
    assert np.isfinite(log["loss"]).all() and not np.allclose(log["loss"], fp32["loss"]), "bf16 encoding ran"
    for part in ("vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        base, saved = load_file(sd_dir / part), load_file(out / part)
        assert base.keys() == saved.keys()
        assert all(saved[k].dtype == base[k].dtype and torch.equal(saved[k], base[k]) for k in base), part


def test_snr_gamma_weights_the_fine_tuning_loss_by_its_timesteps(sd_dir, shards, tmp_path):
    """`snr_gamma` reaches the loss with this scheduler's SNR at each image's own timestep: a gamma above
    every SNR leaves the plain loss (every weight 1), a gamma below every SNR scales it down (weights
    gamma/SNR), both on the same first batch, noise and weights."""
    def first_loss(name, **over):
        log = finetune_generator(str(sd_dir), shards, PROMPTS[:1], recipe(steps=1, batch_size=8, **over),
                                 0, tmp_path / name, progress=False)
        return float(log["loss"].iloc[0])

    from diffusers import DDPMScheduler

    a = DDPMScheduler.from_pretrained(sd_dir, subfolder="scheduler").alphas_cumprod.double()
    snr = a / (1 - a)
    plain = first_loss("plain")
    assert first_loss("huge", snr_gamma=float(snr.max()) * 10) == pytest.approx(plain, rel=1e-5)
    assert first_loss("tiny", snr_gamma=float(snr.min()) / 100) < 0.02 * plain


def test_a_fine_tuned_generator_records_its_config_name_and_base():
    """generator_provenance (script finetune_generator): the synthscale.json of a fine-tuned folder names
    its config entry, which errors name as its recipe's key, and its base as the config spells it."""
    from synthscale.generation.finetune import generator_provenance, recipe_key

    gen = {"name": "tinydigits-ft", "kind": "finetuned", "base": "tinydigits", "finetune": {"mode": "full"}}
    assert generator_provenance(gen) == {"generator": "tinydigits-ft", "base_spec": "tinydigits"}
    assert recipe_key(generator_provenance(gen)) == "generators.tinydigits-ft.finetune"
