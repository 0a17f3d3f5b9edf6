"""Text-to-image generators: load any diffusers text-to-image pipeline (a Hub id, a local pipeline folder,
a LoRA folder over a base pipeline, or the workflow's own tiny pipeline), pick its sampler, and set it up
for fast sampling.

Sampling itself is synthscale.generation.generate's: `encode_prompt` once per unique prompt, then the pipeline's
own `__call__` with the embeddings and one `torch.Generator` per image, so every pipeline that diffusers
calls this way (SD 1.x/2.x, SDXL, SD3, PixArt-alpha/sigma, Flux, and PixelTextToImagePipeline) works.

A generator folder is either
- a diffusers pipeline folder (`model_index.json` plus one sub-folder per component), or
- a LoRA folder: `synthscale.json` holding `{"base": <Hub id or pipeline folder>, "lora": true}` and
  diffusers' `pytorch_lora_weights.safetensors` (written by the pipeline's `save_lora_weights`);
  synthscale.generation.folders spells both and reads the record.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)

from synthscale.generation.folders import LORA_WEIGHTS, lora_base
from synthscale.generation.tinygen import PixelTextToImagePipeline  # the workflow's own pipeline

SAMPLERS: dict[str, type] = {
    "ddim": DDIMScheduler,
    "ddpm": DDPMScheduler,
    "dpm": DPMSolverMultistepScheduler,
    "euler": EulerDiscreteScheduler,
    "euler_a": EulerAncestralDiscreteScheduler,
    "pndm": PNDMScheduler,
    "unipc": UniPCMultistepScheduler,
}
KEEP_SAMPLER = (None, "default")
OWN_PIPELINES = {"PixelTextToImagePipeline": PixelTextToImagePipeline}
# __call__ arguments that make a pipeline image-conditioned (img2img, inpainting, ControlNet, ...)
IMAGE_INPUTS = {"image", "mask_image", "control_image", "init_image"}


# --- what a source is ---


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def generator_source(folders: str | Sequence[str], spec: dict[str, Any]) -> str:
    """What a generation job loads: the first of the generator folders the study makes for it
    (Plan.generator_inputs: a trained or fine-tuned generator's own folder, then a LoRA's base folder,
    which `load_generator` finds through the LoRA's synthscale.json), else, for a pretrained generator
    (no folder), its config `source` (a Hub id or a path)."""
    folders = [folders] if isinstance(folders, str) else list(folders)
    return folders[0] if folders else spec["source"]


def pipeline_class(name: str) -> type | None:
    """The pipeline class that model_index.json's `_class_name` names, or None."""
    import diffusers

    return OWN_PIPELINES.get(name) or getattr(diffusers, name, None)


def is_text_to_image(cls: type) -> bool:
    """A pipeline the generation path can call: `encode_prompt`, and a `__call__` that takes
    `prompt_embeds` and no input image."""
    if not hasattr(cls, "encode_prompt"):
        return False
    params = set(inspect.signature(cls.__call__).parameters)
    return "prompt_embeds" in params and not (params & IMAGE_INPUTS)


def sampler_fits(scheduler_cls: type, name: str | None) -> bool:
    """May the pipeline's scheduler be swapped for the named sampler? Only within its family
    (`scheduler.compatibles`); flow-matching schedulers have no DDPM-family compatibles."""
    if name in KEEP_SAMPLER:
        return True
    target = SAMPLERS[name]
    # `compatibles` is an instance property over the class's `_compatibles` names
    return target is scheduler_cls or target.__name__ in set(getattr(scheduler_cls, "_compatibles", []))


def check_local_source(folder: str | os.PathLike, sampler: str | None) -> tuple[str, str] | None:
    """Why a local generator folder cannot be used with `sampler`: (`source` or `sampler`, message),
    or None when it can."""
    folder = Path(folder)
    base = lora_base(folder)
    if base is not None:
        if not (folder / LORA_WEIGHTS).exists():
            return "source", f"LoRA folder {str(folder)!r} has no {LORA_WEIGHTS}"
        return check_local_source(base, sampler) if Path(base).exists() else None
    index = folder / "model_index.json"
    if not index.exists():
        return "source", f"{str(folder)!r} is no diffusers pipeline folder (no model_index.json) and no LoRA folder"
    info = read_json(index)
    name = info.get("_class_name", "")
    cls = pipeline_class(name)
    if cls is None or not is_text_to_image(cls):
        return "source", f"{str(folder)!r} holds a {name or 'unnamed'} pipeline, not a text-to-image pipeline"
    # the scheduler class: model_index.json's entry decides, scheduler_config.json names it too
    entry = info.get("scheduler") or [None, None]
    sched = folder / "scheduler" / "scheduler_config.json"
    sname = entry[1] or (read_json(sched).get("_class_name") if sched.exists() else None)
    if sname:
        import diffusers

        scls = getattr(diffusers, sname, None)
        if scls is not None and not sampler_fits(scls, sampler):
            return "sampler", f"{sampler!r} does not fit the pipeline's {sname}; use null to keep it"
    return None


# --- loading ---


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """`auto`: bfloat16 on a GPU, float32 elsewhere (bf16 matmuls are slow on most CPUs)."""
    if dtype == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def load_generator(
    source: str | os.PathLike,
    trained_here: bool = False,
    device: str = "cpu",
    dtype: str = "float32",
    fuse_lora: bool = True,
):
    """Load a text-to-image pipeline from a Hub id, a pipeline folder or a LoRA folder, safetensors only.

    The class comes from model_index.json (the workflow's own PixelTextToImagePipeline included);
    a LoRA folder loads its base, then `load_lora_weights`, fused into the weights for speed.
    `trained_here` insists on a local folder (the workflow's own generators).
    """
    local = Path(source)
    base = lora_base(local) if local.is_dir() else None
    if base is not None:
        pipe = load_generator(base, device=device, dtype=dtype)
        pipe.load_lora_weights(str(local), weight_name=LORA_WEIGHTS)
        if fuse_lora:
            pipe.fuse_lora()
            pipe.unload_lora_weights()
        return pipe
    if (local.exists() or trained_here) and not (local / "model_index.json").exists():
        raise FileNotFoundError(f"generator folder {source} has no model_index.json (nor a LoRA synthscale.json)")
    return open_pipeline(source, device, resolve_dtype(dtype, device))


def open_pipeline(
    source: str | os.PathLike,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    keep_safety_checker: bool = False,
):
    """A pipeline from a Hub id or a local pipeline folder (safetensors only), its progress bar off,
    moved to `device`: the one loader of `load_generator` and fine-tuning's base
    (`synthscale.generation.finetune.load_base_pipeline`).

    The class is the one a local folder's model_index.json names when it is the workflow's own
    (PixelTextToImagePipeline, not in diffusers), else DiffusionPipeline. `dtype` None passes no dtype
    to `from_pretrained` (its default). A safety checker is dropped (it blanks images; a training set
    needs the generator's own output) unless `keep_safety_checker` (a fine-tuned pipeline is saved whole).
    """
    cls = DiffusionPipeline
    local = Path(source)
    if local.exists():
        cls = OWN_PIPELINES.get(read_json(local / "model_index.json").get("_class_name"), DiffusionPipeline)
    kwargs = {} if dtype is None else {"dtype": dtype}
    pipe = cls.from_pretrained(str(source), use_safetensors=True, **kwargs)
    if not keep_safety_checker and getattr(pipe, "safety_checker", None) is not None:
        pipe.safety_checker = None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def guidance_kind(pipe) -> str:
    """What the guidance axis means for this pipeline, recorded with every image:

    - `cfg`: classifier-free guidance, a conditional and an unconditional pass mixed by
      `guidance_scale` (SD 1.x/2.x, SDXL, SD3, PixArt, the workflow's own pipeline);
    - `distilled`: a guidance *embedding* the model was distilled on (FLUX.1-dev's `guidance_embeds`):
      one conditional pass, no unconditional one, so its scale is not CFG's and its values do not
      compare with CFG's;
    - `none`: the model ignores `guidance_scale` (FLUX.1-schnell, no guidance embedding).
    """
    config = getattr(denoiser(pipe), "config", {})
    if "guidance_embeds" in config:  # Flux's transformer: guidance is an input, not CFG
        return "distilled" if config["guidance_embeds"] else "none"
    return "cfg"


def set_sampler(pipe, name: str | None) -> str:
    """Swap the pipeline's scheduler for the named sampler (same noise schedule); `None`/`default`
    keeps the pipeline's own. Returns the scheduler's class name."""
    if name not in KEEP_SAMPLER:
        if name not in SAMPLERS:
            raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)} or null")
        if not sampler_fits(type(pipe.scheduler), name):
            raise ValueError(
                f"sampler {name!r} does not fit {type(pipe).__name__}'s {type(pipe.scheduler).__name__}"
            )
        pipe.scheduler = SAMPLERS[name].from_config(pipe.scheduler.config)
    return type(pipe.scheduler).__name__


# --- speed ---


def denoiser(pipe) -> torch.nn.Module:
    """The pipeline's denoising network: a UNet or a transformer."""
    for name in ("unet", "transformer", "prior"):
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    raise TypeError(f"{type(pipe).__name__} has no unet or transformer")


def speed_up(
    pipe,
    channels_last: bool = True,
    vae_slicing: bool = True,
    compile_mode: str | None = None,
) -> None:
    """Sampling speed-ups that leave the images' meaning unchanged.

    Attention already runs through PyTorch's scaled_dot_product_attention (diffusers' default
    processors); convolutional models go channels_last; the VAE decodes image by image (bounded
    memory); `compile_mode` compiles the denoiser (fixed batch shapes keep it from recompiling).
    """
    net = denoiser(pipe)
    vae = getattr(pipe, "vae", None)
    if channels_last:
        for m in (net, vae):
            if m is not None and any(isinstance(x, torch.nn.Conv2d) for x in m.modules()):
                m.to(memory_format=torch.channels_last)
    if vae_slicing and vae is not None and hasattr(vae, "enable_slicing"):
        vae.enable_slicing()
    if compile_mode is not None:
        net.compile(mode=None if compile_mode == "default" else compile_mode, fullgraph=False)
