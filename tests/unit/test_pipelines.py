"""Every diffusers text-to-image family through one generation path: tiny SD 1.x, SDXL, PixArt-alpha,
SD3 and Flux pipelines with random weights, saved to disk and loaded as local folders; per-image noise;
LoRA folders; config errors; blocks of shards with shard-granular resume. Every family's run through
Snakemake, and the block jobs' plan, are in tests/workflow/test_pipelines_workflow.py."""
import json
import shutil

import numpy as np
import pytest
import torch
from diffusers.utils import logging as dlogging

from helpers import REPO
from helpers.tiny_pipelines import BUILDERS
from synthscale.study.config import ConfigError, check_config
from synthscale.generation.generate import (
    ImageSpec,
    PromptEmbeddings,
    generate_block,
    generate_images,
    generate_shard,
)
from synthscale.io import partial_path
from synthscale.generation.pipelines import load_generator, set_sampler, speed_up
from synthscale.study.plan import Plan
from synthscale.data.shards import load_arrays
from synthscale.generation.tinygen import build_tiny_pipeline

torch.set_num_threads(1)
dlogging.set_verbosity_error()
FLOW = {"sd3", "flux"}  # flow-matching schedulers: they keep their own sampler
PROMPTS = [[f"a photo of the digit {w}", f"the number {w}"] for w in ("zero", "one", "two")]
ARCH = dict(unet_widths=[16, 32], layers_per_block=1, attention_head_dim=8, norm_groups=8,
            text_width=32, text_layers=1, text_heads=2, max_tokens=16)


def shard_kwargs(**kw):
    base = dict(shard_size=4, class_prompts=PROMPTS, base_seed=3, steps=2, sampler="ddim", batch_size=3,
                generator_name="g", class_names=["zero", "one", "two"], progress=False, size=16)
    return {**base, **kw}


@pytest.mark.parametrize("family", list(BUILDERS))
def test_each_family_writes_a_shard(family, pipeline_folders, tmp_path):
    pipe = load_generator(pipeline_folders[family])
    sampler = None if family in FLOW else "ddim"
    set_sampler(pipe, sampler)
    speed_up(pipe)
    kw = shard_kwargs(sampler=sampler)
    r2 = generate_shard(pipe, tmp_path / "g2.tar", 1, guidance=2.0, **kw)
    r1 = generate_shard(pipe, tmp_path / "g1.tar", 1, guidance=1.0, **kw)
    x2, labels, recs = load_arrays([tmp_path / "g2.tar"])
    x1, _, _ = load_arrays([tmp_path / "g1.tar"])
    assert x2.shape == (4, 16, 16, 3) and list(labels) == [1, 2, 0, 1]
    assert recs[0]["prompt"] in PROMPTS[1] and recs[0]["guidance"] == 2.0 and recs[0]["index"] == 4
    assert x2.std() > 5, "images must not be blank"
    strip = lambda rs: [{k: v for k, v in r.items() if k != "guidance"} for r in rs]  # noqa: E731
    assert strip(r1) == strip(r2), "guidance values share prompts and seeds"
    assert not np.array_equal(x1, x2), "guidance must change the images"
    generate_shard(pipe, tmp_path / "again.tar", 1, guidance=2.0, **kw)
    assert (tmp_path / "again.tar").read_bytes() == (tmp_path / "g2.tar").read_bytes()


@pytest.mark.parametrize("family,sampler", [("tiny", "ddim"), ("tiny", "ddpm"), ("sd", "ddim"), ("sd", "ddpm"),
                                            ("sdxl", "ddim"), ("sdxl", "ddpm"), ("pixart", "ddim"),
                                            ("pixart", "ddpm"), ("sd3", None), ("flux", None)])
def test_an_image_does_not_depend_on_its_batch(family, sampler, pipeline_folders):
    pipe = build_tiny_pipeline(ARCH, 16, 1, 0) if family == "tiny" else load_generator(pipeline_folders[family])
    set_sampler(pipe, sampler)
    specs = [ImageSpec(i, i % 3, PROMPTS[i % 3][i % 2], 100 + i) for i in range(7)]
    together = np.stack(generate_images(pipe, specs, 2.0, 3, batch_size=7, height=16, width=16))
    alone = np.stack([generate_images(pipe, [s], 2.0, 3, batch_size=1, height=16, width=16)[0] for s in specs])
    if family == "tiny":
        np.testing.assert_array_equal(together, alone)
    else:
        # same noise; CPU kernels may round differently for another batch shape (below 1e-5 in float)
        diff = np.abs(together.astype(int) - alone)
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    # the old path seeded step noise from the batch's first image: a different first image changed
    # every DDPM image after it; here image 3 is the same whatever comes before it
    shifted = generate_images(pipe, specs[3:], 2.0, 3, batch_size=4, height=16, width=16)[0]
    assert np.abs(shifted.astype(int) - alone[3]).max() <= (0 if family == "tiny" else 1)


def test_prompts_are_encoded_once_each(pipeline_folders):
    pipe = load_generator(pipeline_folders["sdxl"])
    emb = PromptEmbeddings(pipe)
    batch = emb(["a", "b", "a", "a"])
    assert emb.encoded == 2
    assert {"prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds"} == set(batch)
    assert batch["prompt_embeds"].shape[0] == 4 and batch["negative_pooled_prompt_embeds"].shape[0] == 4
    torch.testing.assert_close(batch["prompt_embeds"][0], batch["prompt_embeds"][2])
    emb(["b", "c"])
    assert emb.encoded == 3
    pix = PromptEmbeddings(load_generator(pipeline_folders["pixart"]))
    assert {"prompt_attention_mask", "negative_prompt_attention_mask"} <= set(pix(["a photo"]))


def test_storage_size_and_format(pipeline_folders, tmp_path):
    pipe = load_generator(pipeline_folders["sd"])
    recs = generate_shard(pipe, tmp_path / "s.tar", 0, guidance=2.0,
                          storage={"size": 8, "format": "jpeg", "quality": 80}, **shard_kwargs())
    import tarfile

    names = tarfile.open(tmp_path / "s.tar").getnames()
    assert "00000000.jpg" in names and not any(n.endswith(".png") for n in names)
    x, _, _ = load_arrays([tmp_path / "s.tar"])
    assert x.shape == (4, 8, 8, 3) and recs[0]["height"] == 8


def save_random_lora(pipe, pipeline_cls, folder) -> None:
    """A LoRA on the pipeline's UNet, on the modules fine-tuning targets (finetune.LORA_TARGETS), with
    random B weights so that it changes the images, saved as diffusers saves LoRA weights."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from synthscale.generation.finetune import LORA_TARGETS

    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=LORA_TARGETS))
    with torch.no_grad():
        for name, p in pipe.unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    pipeline_cls.save_lora_weights(
        folder, unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet)))


def test_lora_folder_loads_over_its_base(pipeline_folders, tmp_path):
    """The fine-tuning contract: synthscale.json {"base", "lora": true} + pytorch_lora_weights.safetensors."""
    from diffusers import StableDiffusionPipeline

    lora = tmp_path / "lora"
    save_random_lora(load_generator(pipeline_folders["sd"]), StableDiffusionPipeline, lora)
    (lora / "synthscale.json").write_text(json.dumps({"base": str(pipeline_folders["sd"]), "lora": True}))
    specs = [ImageSpec(i, 0, "a photo of the digit one", 7 + i) for i in range(2)]
    plain = np.stack(generate_images(load_generator(pipeline_folders["sd"]), specs, 2.0, 2, 2))
    tuned = np.stack(generate_images(load_generator(lora), specs, 2.0, 2, 2))
    unfused = np.stack(generate_images(load_generator(lora, fuse_lora=False), specs, 2.0, 2, 2))
    assert np.abs(tuned.astype(int) - plain).max() > 10, "the LoRA must change the images"
    assert np.abs(tuned.astype(int) - unfused).max() <= 2, "fusing must not change what the LoRA does"
    cfg = check_config(study_cfg({"name": "ft", "kind": "pretrained", "source": str(lora)}))
    assert cfg["generators"][0]["source"] == str(lora)


def study_cfg(generator: dict, **generation) -> dict:
    import yaml

    cfg = yaml.safe_load((REPO / "configs/test.yaml").read_text())
    cfg["generators"] = [generator]
    cfg["generation"].update(generation)
    return cfg


def test_non_text_to_image_folders_are_config_errors(pipeline_folders, tmp_path):
    from diffusers import DDPMPipeline, StableDiffusionImg2ImgPipeline, UNet2DModel

    sd = load_generator(pipeline_folders["sd"])
    StableDiffusionImg2ImgPipeline(**sd.components).save_pretrained(tmp_path / "i2i")
    DDPMPipeline(unet=UNet2DModel(sample_size=8, block_out_channels=(8, 16), norm_num_groups=8,
                                  down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2),
                 scheduler=sd.scheduler).save_pretrained(tmp_path / "uncond")
    (tmp_path / "empty").mkdir()
    for name in ("i2i", "uncond", "empty"):
        with pytest.raises(ConfigError, match=r"config key generators\.x\.source: .*"):
            check_config(study_cfg({"name": "x", "kind": "pretrained", "source": str(tmp_path / name)}))


def test_sampler_outside_the_scheduler_family_is_a_config_error(pipeline_folders, tmp_path):
    flow = tmp_path / "flow"
    shutil.copytree(pipeline_folders["sd"], flow)
    sched = flow / "scheduler" / "scheduler_config.json"
    sched.write_text(json.dumps({"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000}))
    index = flow / "model_index.json"
    index.write_text(json.dumps({**json.loads(index.read_text()),
                                 "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"]}))
    gen = {"name": "x", "kind": "pretrained", "source": str(flow)}
    with pytest.raises(ConfigError, match=r"config key generation\.sampler: 'ddim' does not fit .*FlowMatch"):
        check_config(study_cfg(gen, sampler="ddim"))
    check_config(study_cfg(gen, sampler=None))  # null keeps the pipeline's own
    sdxl = {**gen, "source": str(pipeline_folders["sdxl"])}
    check_config(study_cfg(sdxl, sampler="ddpm"))  # Euler -> DDPM: same family
    with pytest.raises(ValueError, match="does not fit"):
        set_sampler(load_generator(flow), "ddim")


def test_images_per_job_must_be_a_power_of_ten_of_shards(pipeline_folders):
    gen = {"name": "x", "kind": "pretrained", "source": str(pipeline_folders["sd"])}
    for bad in (30, 60):  # not a multiple of 20; 3 shards
        with pytest.raises(ConfigError, match=r"config key generation\.images_per_job"):
            check_config(study_cfg(gen, shard_size=20, images_per_job=bad))
    cfg = check_config(study_cfg(gen, shard_size=20, images_per_job=200))
    plan = Plan(cfg)
    outs = plan.block_outputs("F", "00001")
    assert outs[0] == "F/shard-000010.tar" and outs[-1] == "F/shard-000019.tar"
    # block outputs are exactly the shards Plan.shards lists, so nested N is unchanged
    assert plan.shards("x", 1.0, "classname", 400)[10:] == [p.replace("F", plan.synthetic_dir("x", 1.0, "classname")) for p in outs]


def test_a_block_keeps_and_reuses_finished_shards(tmp_path):
    pipe = build_tiny_pipeline(ARCH, 16, 1, 0)
    set_sampler(pipe, "ddim")
    paths = [tmp_path / f"shard-00001{j}.tar" for j in range(3)]
    kw = shard_kwargs(guidance=2.0)
    generate_block(pipe, paths, 10, {"a": 1}, **kw)
    assert all(p.exists() for p in paths) and not list((tmp_path / ".partial").iterdir())
    _, _, recs = load_arrays(paths[1:2], mode="L")
    assert recs[0]["index"] == 11 * 4, "shard k holds images k*S ... (k+1)*S - 1"
    # a killed job: shard 0 finished under the same settings, shard 1 under other settings
    done = paths[0].read_bytes()
    for p in paths:
        p.unlink()
    fake = tmp_path / "other.tar"
    generate_shard(pipe, fake, 99, **kw)
    for j, stamp in ((0, {"a": 1}), (1, {"a": 2})):
        shutil.copy(fake, partial_path(paths[j]))
        partial_path(paths[j], ".json").write_text(json.dumps(stamp, sort_keys=True))
    generate_block(pipe, paths, 10, {"a": 1}, **kw)
    assert paths[0].read_bytes() == fake.read_bytes(), "a finished shard with matching settings is reused"
    assert paths[1].read_bytes() != fake.read_bytes(), "a shard made with other settings is redone"
    assert done != fake.read_bytes()


def test_every_family_is_recognised_from_its_signatures():
    """Every family's encode_prompt layout is read off its signatures, Sigma included (no tiny build)."""
    import diffusers

    from synthscale.generation.prompt_encoding import encode_layout
    from synthscale.generation.pipelines import is_text_to_image

    expected = {
        "StableDiffusionPipeline": ("prompt_embeds", "negative_prompt_embeds"),
        "StableDiffusionXLPipeline": ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
                                      "negative_pooled_prompt_embeds"),
        "StableDiffusion3Pipeline": ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
                                     "negative_pooled_prompt_embeds"),
        "PixArtAlphaPipeline": ("prompt_embeds", "prompt_attention_mask", "negative_prompt_embeds",
                                "negative_prompt_attention_mask"),
        "PixArtSigmaPipeline": ("prompt_embeds", "prompt_attention_mask", "negative_prompt_embeds",
                                "negative_prompt_attention_mask"),
        "FluxPipeline": ("prompt_embeds", "pooled_prompt_embeds", "text_ids"),
        "PixelTextToImagePipeline": ("prompt_embeds", "negative_prompt_embeds"),
    }
    from synthscale.generation.tinygen import PixelTextToImagePipeline

    for name, layout in expected.items():
        cls = PixelTextToImagePipeline if name == "PixelTextToImagePipeline" else getattr(diffusers, name)
        assert is_text_to_image(cls), name
        assert encode_layout(cls) == layout, name
    for name in ("StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline", "DDPMPipeline",
                 "FluxImg2ImgPipeline"):
        assert not is_text_to_image(getattr(diffusers, name)), name


def test_lora_over_the_workflows_own_pipeline_loads(tmp_path):
    """A LoRA fine-tune of the trained tiny generator (the default study's) loads through the same path."""
    from synthscale.generation.tinygen import PixelTextToImagePipeline

    base = build_tiny_pipeline(ARCH, 16, 1, 0)
    base.save_pretrained(tmp_path / "base", safe_serialization=True)
    save_random_lora(base, PixelTextToImagePipeline, tmp_path / "lora")
    (tmp_path / "lora" / "synthscale.json").write_text(json.dumps({"base": "../base", "lora": True}))
    specs = [ImageSpec(0, 0, "seven", 5)]
    plain = generate_images(load_generator(tmp_path / "base"), specs, 2.0, 2, 1)[0]
    tuned_pipe = load_generator(tmp_path / "lora")  # a relative base resolves beside the LoRA folder
    assert isinstance(tuned_pipe, PixelTextToImagePipeline)
    tuned = generate_images(tuned_pipe, specs, 2.0, 2, 1)[0]
    assert np.abs(tuned.astype(int) - plain).max() > 10


def test_a_generator_folders_record_is_read_and_written_in_one_place(tmp_path):
    """synthscale.generation.folders: the two layouts of synthscale.json, byte for byte as studies hold
    them (the tiny generator's in key order, a fine-tune's sorted with a final newline), and the one
    LoRA check, which the loader and fine-tuning's refusal of a LoRA base share."""
    from synthscale.generation.finetune import load_base_pipeline
    from synthscale.generation.folders import META, lora_base, read_meta, write_meta

    record = {"seed": 0, "arch": {"a": 1}}
    write_meta(tmp_path, record)
    assert (tmp_path / META).read_text() == json.dumps(record, indent=1)
    write_meta(tmp_path, record, sort_keys=True)
    assert (tmp_path / META).read_text() == json.dumps(record, indent=1, sort_keys=True) + "\n"
    assert read_meta(tmp_path) == record and lora_base(tmp_path) is None
    assert read_meta(tmp_path / "elsewhere") is None and lora_base(tmp_path / "elsewhere") is None
    (tmp_path / "base").mkdir()
    lora = tmp_path / "lora"
    lora.mkdir()
    write_meta(lora, {"base": "../base", "lora": True})
    assert lora_base(lora) == str(lora / "../base")
    write_meta(lora, {"base": "org/hub-id", "lora": True})
    assert lora_base(lora) == "org/hub-id"
    with pytest.raises(ValueError, match="holds LoRA weights"):
        load_base_pipeline(lora)
    write_meta(lora, {"lora": True})  # a LoRA record without its base: an error naming the file
    with pytest.raises(ValueError, match="names no base pipeline"):
        lora_base(lora)


def test_run_block_writes_the_shards_the_scripts_calls_wrote(tmp_path):
    """run_block (script generate_block's one call) writes byte for byte the shards of the calls the
    script made itself before: load, sampler, speed-ups, fingerprint, generate_block at block x shards."""
    import pandas as pd
    import yaml

    from synthscale.data.real import CLASS_COLUMNS, class_names
    from synthscale.generation.generate import block_fingerprint, run_block
    from synthscale.generation.pipelines import generator_source

    folder = tmp_path / "gen"
    build_tiny_pipeline(ARCH, 16, 1, 0).save_pretrained(folder, safe_serialization=True)
    prompts, classes = tmp_path / "prompts.jsonl", tmp_path / "classes.csv"
    prompts.write_text("".join(json.dumps({"index": c, "prompts": p}) + "\n" for c, p in enumerate(PROMPTS)))
    pd.DataFrame([[c, f"n{c}", w, "", ""] for c, w in enumerate(("zero", "one", "two"))],
                 columns=CLASS_COLUMNS).to_csv(classes, index=False)
    cfg = check_config(yaml.safe_load((REPO / "config.yaml").read_text()))
    gen = {**cfg["generation"], "steps": 2, "shard_size": 4}
    spec = {"name": "g", "dtype": "float32", "size": 16, "source": "unused"}
    new = [tmp_path / "new" / f"shard-00000{k}.tar" for k in (2, 3)]
    run_block([str(folder)], spec, gen, "2.0", "1", prompts, classes, [str(p) for p in new], "cpu", 3)

    from synthscale.prompts.strategies import read_prompts

    old = [tmp_path / "old" / p.name for p in new]
    source = generator_source([str(folder)], spec)
    pipe = load_generator(source, device="cpu", dtype="float32")
    scheduler = set_sampler(pipe, gen["sampler"])
    speed_up(pipe, gen["channels_last"], gen["vae_slicing"], gen["compile"])
    generate_block(
        pipe, old, first_shard=1 * len(old),
        fingerprint=block_fingerprint(spec, gen, "2.0", prompts, "cpu", source),
        shard_size=4, class_prompts=read_prompts(prompts), base_seed=gen["seed"], guidance=2.0, steps=2,
        sampler=scheduler, batch_size=3, generator_name="g", class_names=class_names(classes), size=16,
        storage=gen["storage"], pad=gen["compile"] is not None, prompt_cache=gen["prompt_cache"],
    )
    assert [p.read_bytes() for p in new] == [p.read_bytes() for p in old]
    _, _, recs = load_arrays(new[:1], mode="L")
    assert recs[0]["index"] == 2 * 4 and recs[0]["class_name"] == "two"  # image 8: class 8 mod 3
