"""Fine-tune a text-to-image pipeline's denoiser on the real training split (Azizi et al. 2023).

The real split streams from its WebDataset shards through a torch DataLoader; each image gets a
short caption drawn from its class's prompts (class names by default), and a fraction `uncond_prob`
of captions is emptied so classifier-free guidance still works. The loss is diffusers' usual one:
the MSE between the denoiser's output and the scheduler's target (the noise for epsilon prediction,
the velocity for v prediction) at a random timestep, on VAE latents when the pipeline has a VAE.
Text embeddings come from the pipeline's own (frozen) text encoders, once per unique caption.

Two modes: `full` trains the whole denoiser and saves the whole pipeline (`save_pretrained`);
`lora` trains peft LoRA adapters (`unet.add_adapter`) and saves only them with the pipeline class's
`save_lora_weights`, with their peft config as adapter metadata (rank, `lora_alpha`, targets), so
`load_lora_weights` rebuilds the trained scale alpha / rank, beside a `synthscale.json` that names the
base. Both folders carry that `synthscale.json` (provenance: base, mode, recipe, seed, steps).
With `ema_decay` set, an exponential moving average of the trained weights (diffusers' `EMAModel`)
is kept and saved in their place.

The training target follows the scheduler's `prediction_type` as diffusers' training scripts do:
`epsilon` (the noise), `v_prediction` (the velocity), `sample` (the clean latents); any other type
is an error. On a GPU the frozen VAE and text encoders run in bfloat16 (encoding only, no grad);
the latents and text embeddings are cast back to float32 for the denoiser. On the CPU all stays fp32.

Data order, captions, timesteps and noise come from (seed, epoch) and (seed, step) alone, so a run
stopped by SIGTERM (or `stop_after_steps` in tests), or killed after a periodic checkpoint (every
`checkpoint_minutes`), and resumed from its checkpoint reaches bit-identical weights for a pinned
thread count, as classifier training does. The world size and the loader's worker count fix the
batch order too: a checkpoint records them, and a resume under other counts is refused
(`_resume_finetune`).

The host does not wait on the device every step: each step's loss stays there until a sync point
(every `LOSS_SYNC_EVERY` steps, a checkpoint, the end), where the pending losses are read (and,
under DDP, reduced) in one go, the same floats as a read a step. The loop's control values (every
rank has a batch; a rank was told to stop; rank 0's clock says save) go in one CPU collective a step.

Several GPUs (`resources.finetune.gpu` > 1): `run_distributed` starts one torchrun rank per GPU, each
running `python -m synthscale.generation.finetune SPEC` (synthscale.distributed). `batch_size` stays
the global batch: each of the W ranks trains on batch_size / W images a step, read from its own
shards (the epoch's shard order dealt out rank by rank), with its own shuffle buffer, noise and
timesteps (`rank_seed`: rank 0 draws what one process draws); a caption is drawn per image, from
(seed, epoch, key), whichever rank reads it. DDP averages the ranks' gradients (LoRA adapters
included: DDP reduces whatever requires a gradient), so every rank takes the same optimizer step; an
epoch ends on every rank when any rank's share runs out; the loss logged is the mean over the ranks.
Every rank stops or saves after the same step. Rank 0 alone writes the checkpoint and the output
folder, and the other ranks wait for its final write (`barrier`) before they return. One process
without torchrun runs exactly as before (no process group, no DDP).
"""

from __future__ import annotations

import json
import os
import random
import time
import zlib
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from synthscale.generation.folders import lora_base, write_meta
from synthscale.generation.loss import denoising_loss
from synthscale.generation.prompt_encoding import PromptEncoder
from synthscale.io import atomic_dir
from synthscale.data.real import split_shards
from synthscale.data.shards import decode_image, image_ext, image_mode, wds_samples
from synthscale.distributed import (
    all_sum, all_sum_device, barrier, ddp_wrap, dist_on, rank_main, rank_seed, rank_world, run_torchrun,
    run_training,
)
from synthscale.lr_schedule import step_schedule
from synthscale.prompts.strategies import read_prompts
from synthscale.preemption import (
    CheckpointClock,
    Preempted,
    StopSignals,
    Stopping,
    check_resumed_workers,
    check_resumed_world,
    ignore_stop_signals,
    resume_checkpoint,
    save_checkpoint,
)

LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
LOG = "finetune_log.csv"
LOSS_SYNC_EVERY = 20  # steps between reads of the device-side losses (and the progress bar's loss)


# --- the base pipeline ---


def load_base_pipeline(source: str | os.PathLike, device: str = "cpu"):
    """A full text-to-image pipeline from a Hub id or a local folder (safetensors only, fp32), loaded
    by `synthscale.generation.pipelines.open_pipeline` (the class from model_index.json, the workflow's
    own PixelTextToImagePipeline included) with from_pretrained's default dtype and its safety checker
    kept (full mode saves the whole pipeline). A LoRA folder is refused: fine-tune from its base."""
    folder = Path(source)
    if folder.exists():
        if lora_base(folder) is not None:
            raise ValueError(
                f"{source} holds LoRA weights, not a pipeline; fine-tune from its base instead"
            )
        if not (folder / "model_index.json").exists():
            raise FileNotFoundError(f"base generator folder {source} has no model_index.json")
    from synthscale.generation.pipelines import open_pipeline

    return open_pipeline(source, device, keep_safety_checker=True)


def denoiser_of(pipe):
    unet = getattr(pipe, "unet", None)
    if unet is None:
        raise ValueError(
            f"{type(pipe).__name__} has no UNet; fine-tuning supports UNet2DConditionModel "
            "pipelines (Stable Diffusion 1.x/2.x, SDXL and the workflow's own pixel pipeline)"
        )
    return unet


def image_channels(pipe) -> int:
    vae = getattr(pipe, "vae", None)
    return vae.config.in_channels if vae is not None else denoiser_of(pipe).config.in_channels


def native_resolution(pipe) -> int:
    """The resolution the denoiser was built for: its sample size times the VAE's downscaling."""
    vae = getattr(pipe, "vae", None)
    factor = 2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 1
    return int(denoiser_of(pipe).config.sample_size) * factor


# --- captions and the streamed training split ---


def draw_caption(
    class_prompts: Sequence[Sequence[Sequence[str]]],
    label: int,
    key: str,
    seed: int,
    epoch: int,
    uncond_prob: float,
) -> str:
    """Image `key`'s caption in `epoch`: "" with probability uncond_prob, else a random strategy's
    random prompt for its class. Drawn from (seed, epoch, key) alone."""
    rng = np.random.default_rng([seed, epoch, zlib.crc32(key.encode())])
    if rng.random() < uncond_prob:
        return ""
    prompts = class_prompts[int(rng.integers(len(class_prompts)))][label]
    return prompts[int(rng.integers(len(prompts)))]


def to_pixels(image: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (H, W, C) to float (C, size, size) in [-1, 1]: shorter side resized, centre crop."""
    im = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    w, h = im.size
    if (w, h) != (size, size):
        s = size / min(w, h)
        im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
        w, h = im.size
        left, top = (w - size) // 2, (h - size) // 2
        im = im.crop((left, top, left + size, top + size))
    x = torch.from_numpy(np.asarray(im).copy()).float().div(127.5).sub(1.0)
    return x[None] if x.ndim == 2 else x.permute(2, 0, 1)


def _example(sample: dict, *, mode, size, class_prompts, seed, epoch, uncond_prob):
    ext = image_ext(sample, sample["__key__"])
    label = int(bytes(sample["cls"]).decode())
    caption = draw_caption(class_prompts, label, sample["__key__"], seed, epoch, uncond_prob)
    return to_pixels(decode_image(bytes(sample[ext]), mode), size), caption


def epoch_loader(
    shards: Sequence[str | os.PathLike],
    class_prompts: Sequence[Sequence[Sequence[str]]],
    recipe: dict[str, Any],
    seed: int,
    epoch: int,
    size: int,
    mode: str,
    rank: int = 0,
    world: int = 1,
) -> torch.utils.data.DataLoader:
    """One epoch of (pixels, caption) batches streamed from the shards.

    Shard order and the shuffle buffer are seeded by (seed, epoch), so the epoch's batches are a
    function of them alone for a fixed `num_workers` (each worker reads its own shards, through its
    copy of the buffer; 0 and 1 read one stream); only `shuffle_buffer` images are in memory.
    Rank `rank` of `world` (DDP) reads every world-th shard of the epoch's order, in batches of
    batch_size / world, through its own shuffle buffer (rank 0's seeded as one process's).
    """
    import webdataset as wds

    urls = [str(s) for s in shards]
    random.Random(seed * 1_000_003 + epoch).shuffle(urls)
    urls = urls[rank::world]  # this rank's share: every shard in one process
    example = partial(
        _example,
        mode=mode,
        size=size,
        class_prompts=class_prompts,
        seed=seed,
        epoch=epoch,
        uncond_prob=recipe["uncond_prob"],
    )
    buf = recipe["shuffle_buffer"]
    ds = wds.DataPipeline(
        wds.SimpleShardList(urls),
        wds.split_by_worker,
        wds_samples,
        wds.shuffle(buf, initial=buf, rng=random.Random(rank_seed(seed * 7_000_003 + epoch, rank, 61))),
        wds.map(example),
    )
    return torch.utils.data.DataLoader(
        ds, batch_size=recipe["batch_size"] // world, num_workers=recipe["num_workers"], drop_last=True,
        worker_init_fn=ignore_stop_signals,  # SLURM's SIGTERM goes to the workers too: the rank saves first
    )


# --- the training loop ---


def frozen_parts_dtype(device: str) -> torch.dtype:
    """The dtype the frozen VAE and text encoders encode in: bfloat16 on a GPU, float32 elsewhere."""
    return torch.bfloat16 if str(device).startswith("cuda") else torch.float32


def _trainable(unet) -> dict[str, torch.Tensor]:
    return {k: p for k, p in unet.named_parameters() if p.requires_grad}


def step_noise(
    seed: int, step: int, rank: int, shape: Sequence[int], timesteps: int, latents: bool
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """One step's random draws on one rank, on the CPU: (the VAE's latent sampling noise, or None for
    a pixel-space denoiser; the diffusion noise; the timesteps), for a batch of `shape`. Drawn in that
    order from (seed, step), mixed with the rank on ranks other than 0 (`rank_seed`)."""
    gen = torch.Generator().manual_seed(rank_seed(seed * 1_000_003 + step, rank, 67))
    eps = torch.randn(shape, generator=gen) if latents else None
    noise = torch.randn(shape, generator=gen)
    return eps, noise, torch.randint(0, timesteps, (shape[0],), generator=gen)


def read_losses(pending: list[tuple[dict[str, Any], torch.Tensor]], world: int) -> list[dict[str, Any]]:
    """The log rows of the steps since the last sync point, their losses read from the device in one
    go: each step's mean loss over the ranks (one all-reduce of the stacked losses under a process
    group, divided by the world size on the host), the same Python floats as a `.item()` a step.
    Under DDP that holds at 1 and 2 ranks; at more, NCCL's ring may add a vector's elements in
    another order than one scalar's, a last-bit difference."""
    if not pending:
        return []
    losses = torch.stack([loss for _, loss in pending])
    if dist_on():
        values = [v / world for v in all_sum_device(losses).tolist()]
    else:
        values = losses.tolist()
    return [{**row, "loss": v} for (row, _), v in zip(pending, values)]


@dataclass
class FinetuneRun:
    """One fine-tuning run as its steps see it: the data, the pipeline and its parts (`net`: the
    denoiser under DDP), the optimizer and schedules, and what stops or checkpoints it. Built by
    `_setup_finetune`; the loop's position is a `FinetunePosition`, apart, since a checkpoint saves it."""

    shards: Sequence[str | os.PathLike]
    class_prompts: Sequence[Sequence[Sequence[str]]]
    recipe: dict[str, Any]
    seed: int
    device: str
    rank: int
    world: int
    pipe: Any
    unet: Any
    lora: bool
    vae: Any
    size: int  # training resolution
    mode: str  # PIL mode the images decode to
    frozen_dtype: torch.dtype
    frozen: dict[str, torch.nn.Module]  # the VAE and text encoders
    frozen_fp32: dict[str, dict[str, torch.Tensor]]  # their fp32 weights, where they encode in bf16
    params: list[torch.nn.Parameter]
    opt: torch.optim.Optimizer
    sched: Any
    noise_sched: Any
    pred_type: str
    ema: Any
    encode: PromptEncoder
    net: Any = None
    stopping: Stopping | None = None

    @property
    def steps(self) -> int:
        return self.recipe["steps"]


@dataclass
class FinetunePosition:
    """Where the loop stands: steps done, the epoch and its batches done, the log rows read, and the
    steps whose loss is still on the device."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    log_rows: list[dict[str, Any]] = field(default_factory=list)
    pending: list[tuple[dict[str, Any], torch.Tensor]] = field(default_factory=list)


def finetune_generator(
    base: str | os.PathLike,
    shards: Sequence[str | os.PathLike],
    class_prompts: Sequence[Sequence[Sequence[str]]],
    recipe: dict[str, Any],
    seed: int,
    out_dir: str | os.PathLike,
    checkpoint_path: str | os.PathLike | None = None,
    device: str = "cpu",
    progress: bool = True,
    stop_after_steps: int | None = None,
    provenance: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Fine-tune `base`'s denoiser on the real images in `shards`; write the result to `out_dir`.

    `class_prompts[s][c]` lists caption strategy s's prompts for class c. `recipe` is a generator's
    `finetune` section of the config (the schema fills every key). `base` is written into the
    output's synthscale.json as given, so a LoRA folder names the pipeline to load it onto.
    With `checkpoint_path`, SIGTERM or SIGINT saves a checkpoint after the current step and raises
    `Preempted`; `recipe["checkpoint_minutes"]` (absent or 0: off) also saves one every that many
    minutes, for a job killed without warning; a later call resumes from it, unless the number of
    ranks or the loader's `num_workers` changed (an error: they fix the batch order). Returns the
    per-step loss log.

    Under torchrun (a process group is up; see `run_distributed`) each rank trains on its share of
    the shards and `batch_size` / ranks images a step, DDP averages the gradients, and rank 0 alone
    writes the checkpoint and `out_dir`.
    """
    run = _setup_finetune(base, shards, class_prompts, recipe, seed, device)
    ckpt = Path(checkpoint_path) if checkpoint_path else None
    pos = _resume_finetune(run, ckpt, recipe_key(provenance))
    run.net = run.unet
    if dist_on():  # DDP whenever a process group is up, even with one rank
        run.net = ddp_wrap(run.unet, device)
    stop = StopSignals(enabled=bool(ckpt))
    clock = CheckpointClock(recipe.get("checkpoint_minutes") if ckpt else None)
    run.stopping = Stopping(ckpt, stop, clock, stop_after_steps)
    bar = tqdm(total=run.steps, initial=pos.step, desc=f"fine-tune ({recipe['mode']})",
               disable=not progress or run.rank > 0)
    run.net.train()
    t0 = time.time()
    try:
        while pos.step < run.steps:
            finetune_one_epoch(run, pos, bar, t0)
            if pos.step < run.steps:
                pos.epoch, pos.batch = pos.epoch + 1, 0
        pos.log_rows += read_losses(pos.pending, run.world)
    finally:
        bar.close()
        stop.restore()
    return _save_finetuned(run, pos.log_rows, base, out_dir, provenance)


def _setup_finetune(base, shards, class_prompts, recipe: dict[str, Any], seed: int, device: str) -> FinetuneRun:
    """The run's checks, the base pipeline (frozen parts in their encoding dtype), its trainable
    denoiser (from `seed`), optimizer, LR and noise schedules, EMA and prompt encoder."""
    if not class_prompts:
        raise ValueError("fine-tuning needs at least one caption strategy")
    rank, world = rank_world()
    if recipe["batch_size"] % world:
        raise ValueError(
            f"finetune.batch_size {recipe['batch_size']} is not a multiple of the {world} ranks (GPUs) "
            "it is split over"
        )
    pipe = load_base_pipeline(base, device)
    unet = denoiser_of(pipe)
    lora = recipe["mode"] == "lora"
    if lora and not hasattr(type(pipe), "save_lora_weights"):
        raise ValueError(
            f"{type(pipe).__name__} has no diffusers LoRA support (save_lora_weights); "
            "fine-tune it with mode: full"
        )
    vae = getattr(pipe, "vae", None)
    size = recipe["resolution"] or native_resolution(pipe)
    mode = image_mode(image_channels(pipe))
    frozen_dtype, frozen, frozen_fp32 = _freeze_encoders(pipe, device)
    params = _trainable_params(unet, recipe, seed, lora)
    opt = torch.optim.AdamW(params, lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    sched = step_schedule(opt, recipe["steps"], recipe["warmup_steps"], decay="constant")
    noise_sched, pred_type = _noise_schedule(pipe)
    ema = None
    if recipe.get("ema_decay"):
        from diffusers.training_utils import EMAModel

        # the EMA of the trained weights (the whole denoiser in full mode, the adapters in lora mode)
        ema = EMAModel(params, decay=recipe["ema_decay"])
    return FinetuneRun(
        shards, class_prompts, recipe, seed, device, rank, world, pipe, unet, lora, vae, size, mode,
        frozen_dtype, frozen, frozen_fp32, params, opt, sched, noise_sched, pred_type, ema,
        PromptEncoder(pipe, device),
    )


def _freeze_encoders(pipe, device: str) -> tuple[torch.dtype, dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    """The frozen parts (VAE, text encoders) in eval mode without gradients, in the dtype they encode
    in: bf16 on a GPU (half the memory and time of fp32), fp32 on the CPU as before. Returns that
    dtype, the parts, and their fp32 weights on the host where cast, so a full save writes them as
    loaded."""
    frozen_dtype = frozen_parts_dtype(device)
    frozen = {n: getattr(pipe, n, None) for n in ("vae", "text_encoder", "text_encoder_2")}
    frozen = {n: m for n, m in frozen.items() if m is not None}
    frozen_fp32 = {}
    for n, module in frozen.items():
        module.requires_grad_(False).eval()
        if frozen_dtype != torch.float32:
            frozen_fp32[n] = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
            module.to(dtype=frozen_dtype)
    return frozen_dtype, frozen, frozen_fp32


def _trainable_params(unet, recipe: dict[str, Any], seed: int, lora: bool) -> list[torch.nn.Parameter]:
    """What trains: LoRA adapters (initialised from `seed`) or the whole denoiser."""
    torch.manual_seed(seed)
    if lora:
        from peft import LoraConfig

        unet.requires_grad_(False)
        unet.add_adapter(
            LoraConfig(
                r=recipe["lora_rank"],
                lora_alpha=recipe["lora_alpha"] or recipe["lora_rank"],
                init_lora_weights="gaussian",
                target_modules=LORA_TARGETS,
            )
        )
    else:
        unet.requires_grad_(True)
    if recipe["gradient_checkpointing"]:
        unet.enable_gradient_checkpointing()
    return list(_trainable(unet).values())


def _noise_schedule(pipe):
    """The training noise schedule, the pipeline's own as diffusers' training scripts load it, and
    its prediction type (one of PREDICTION_TYPES)."""
    from diffusers import DDPMScheduler

    noise_sched = DDPMScheduler.from_config(pipe.scheduler.config)
    pred_type = noise_sched.config.prediction_type
    if pred_type not in PREDICTION_TYPES:
        raise ValueError(
            f"the base pipeline's scheduler has prediction_type {pred_type!r}; fine-tuning trains "
            f"only {', '.join(PREDICTION_TYPES)} denoisers (as diffusers' training scripts do)"
        )
    return noise_sched, pred_type


def generator_provenance(gen: dict[str, Any]) -> dict[str, Any]:
    """What a fine-tuned generator's synthscale.json records of its config entry `gen` beyond the
    run's own settings: its name (which `recipe_key` names in errors) and its base as configured."""
    return {"generator": gen["name"], "base_spec": gen["base"]}


def recipe_key(provenance: dict[str, Any] | None) -> str:
    """The config key of the recipe, for errors: generators.<name>.finetune (the rule passes the
    generator's name in `provenance`), else finetune."""
    name = (provenance or {}).get("generator")
    return f"generators.{name}.finetune" if name else "finetune"


def _resume_finetune(run: FinetuneRun, ckpt: Path | None, key: str = "finetune") -> FinetunePosition:
    """The loop's position, fresh or from the checkpoint (whose weights, optimizer, schedule and EMA
    are loaded here). A checkpoint records the world size and the loader's worker count, which fix the
    batch order (each rank reads every world-th shard of the epoch's order through its own shuffle
    buffer, in batches of batch_size / world; each worker reads its own shards of the rank's share,
    the loader takes their batches in turn), so a resume under other counts, which would skip other
    batches than those trained on, is refused, naming resources.finetune.gpu or `key`.num_workers
    (`preemption.check_resumed_count`); 0 and 1 workers read one stream (`same_loader_stream`). No
    world size keeps the order of another (tested). A checkpoint written before the counts were
    recorded resumes as before."""
    state = resume_checkpoint(ckpt, run.device, clean=run.rank == 0)
    if state is None:
        return FinetunePosition()
    check_resumed_world(state.get("world_size"), run.world, key="resources.finetune.gpu", ckpt=ckpt)
    check_resumed_workers(state.get("num_workers"), run.recipe["num_workers"], key=f"{key}.num_workers", ckpt=ckpt)
    missing, unexpected = run.unet.load_state_dict(state["trainable"], strict=False)
    if unexpected:
        raise ValueError(f"checkpoint {ckpt} does not fit this denoiser: {unexpected[:3]}")
    run.opt.load_state_dict(state["opt"])
    run.sched.load_state_dict(state["sched"])
    if run.ema is not None:
        if "ema" not in state:
            raise ValueError(f"checkpoint {ckpt} has no EMA weights but finetune.ema_decay is set")
        run.ema.load_state_dict(state["ema"])
    return FinetunePosition(int(state["step"]), int(state["epoch"]), int(state["batch"]), json.loads(state["log"]))


def finetune_one_epoch(run: FinetuneRun, pos: FinetunePosition, bar, t0: float) -> None:
    """The rest of epoch `pos.epoch` (skipping the batches done before a resume), up to the last step;
    with a checkpoint path, each step's stop-or-save flags are acted on with the next batch."""
    recipe, world = run.recipe, run.world
    batches = iter(epoch_loader(run.shards, run.class_prompts, recipe, run.seed, pos.epoch, run.size, run.mode,
                                run.rank, world))
    seen, b = 0, -1
    flags = [0.0, 0.0]  # after the previous step: stop (a signal or the test's stop), save (the clock)
    while True:
        batch = next(batches, None)
        # the loop's one collective a step (CPU values; none in one process): whether every
        # rank has a batch (an epoch ends on all ranks when any rank's share runs out, ranks
        # must step together), and the previous step's flags, so every rank stops or saves
        # after the same step: any rank told to stop, rank 0's clock for periodic checkpoints
        empty, stop_all, save_all = all_sum([float(batch is None), *flags])
        if stop_all or save_all:
            _save_or_stop(run, pos, stop_all)
            flags = [0.0, 0.0]
        if empty:
            break
        x, texts = batch
        b += 1
        seen += 1
        if b < pos.batch:  # resuming: these batches were trained on before the stop
            continue
        loss = finetune_step(run, pos.step, x, texts)
        pos.step += 1
        pos.batch = b + 1
        bar.update(1)
        _log_step(run, pos, loss, bar, t0)
        if pos.step >= run.steps:
            break
        if run.stopping.ckpt:  # read by every rank with the next batch (above)
            flags = run.stopping.flags(pos.step, run.rank)
    if seen == 0:
        raise ValueError(
            f"the training split yields no batch of {recipe['batch_size']} images"
            + (f" ({recipe['batch_size'] // world} on each of {world} ranks, from every "
               f"{world}th shard: write more, smaller shards than ranks)" if world > 1 else "")
            + "; lower finetune.batch_size"
        )


def finetune_step(run: FinetuneRun, step: int, x: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
    """One optimizer step on this rank's batch: noise at random timesteps, the denoiser's prediction
    against the scheduler's target, the gradient (DDP averages it), clipping, the optimizer, LR
    schedule and EMA. Returns the loss, on the device."""
    recipe, noise_sched, pred_type = run.recipe, run.noise_sched, run.pred_type
    x, noise, t = _clean_input_and_noise(run, step, x.to(run.device))
    xt = noise_sched.add_noise(x, noise, t)
    if pred_type == "epsilon":
        target = noise
    elif pred_type == "v_prediction":
        target = noise_sched.get_velocity(x, noise, t)
    else:  # "sample"
        target = x
    cond = run.encode(list(texts), run.size)
    amp = recipe["mixed_precision"] != "no" and run.device.startswith("cuda")
    amp_dtype = torch.bfloat16 if recipe["mixed_precision"] == "bf16" else torch.float16
    with torch.autocast(run.device.split(":")[0], dtype=amp_dtype, enabled=amp):
        pred = run.net(xt, t, **cond).sample
    loss = denoising_loss(pred.float(), target.float(), t, noise_sched, recipe.get("snr_gamma"), pred_type)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    if recipe["max_grad_norm"]:
        torch.nn.utils.clip_grad_norm_(run.params, recipe["max_grad_norm"])
    run.opt.step()
    run.sched.step()
    if run.ema is not None:
        run.ema.step(run.params)
    return loss.detach()


def _clean_input_and_noise(
    run: FinetuneRun, step: int, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The denoiser's clean input (the VAE's sampled, shifted and scaled latents, or the pixels) and
    the step's noise and timesteps (`step_noise`), on the device."""
    vae, device, frozen_dtype = run.vae, run.device, run.frozen_dtype
    n_t = run.noise_sched.config.num_train_timesteps
    with torch.no_grad():
        if vae is not None:
            with torch.autocast(device.split(":")[0], dtype=frozen_dtype, enabled=frozen_dtype != torch.float32):
                dist = vae.encode(x.to(frozen_dtype)).latent_dist
            mean, std = dist.mean.float(), dist.std.float()  # no-ops in fp32
            eps, noise, t = step_noise(run.seed, step, run.rank, mean.shape, n_t, latents=True)
            x = mean + std * eps.to(device)
            x = (x - (vae.config.get("shift_factor") or 0.0)) * vae.config.scaling_factor
        else:
            _, noise, t = step_noise(run.seed, step, run.rank, x.shape, n_t, latents=False)
    return x, noise.to(device), t.to(device)


def _log_step(run: FinetuneRun, pos: FinetunePosition, loss: torch.Tensor, bar, t0: float) -> None:
    """The step's log row, its loss left on the device (no host sync a step) until a sync point: every
    LOSS_SYNC_EVERY steps, a checkpoint and the end; it is logged as the mean over the ranks (each
    rank's loss is the mean of an equal share)."""
    row = {"step": pos.step, "epoch": pos.epoch, "loss": None, "lr": run.sched.get_last_lr()[0],
           "seconds": round(time.time() - t0, 3)}
    pos.pending.append((row, loss))
    if pos.step % LOSS_SYNC_EVERY == 0:
        pos.log_rows += read_losses(pos.pending, run.world)
        pos.pending = []
        bar.set_postfix(loss=f"{np.mean([r['loss'] for r in pos.log_rows[-LOSS_SYNC_EVERY:]]):.4f}")


def _save_or_stop(run: FinetuneRun, pos: FinetunePosition, stop_all: bool) -> None:
    """A checkpoint (rank 0 writes it) at a sync point; on a stop, every rank raises Preempted once it
    is written."""
    pos.log_rows += read_losses(pos.pending, run.world)
    pos.pending = []
    if run.rank == 0:
        save_checkpoint(run.stopping.ckpt, _checkpoint_state(run, pos))
    run.stopping.clock.saved()
    if stop_all:
        # the other ranks wait for the save: one that exited first would have torchrun
        # stop rank 0, in the middle of writing it
        barrier()
        raise Preempted(f"stopped at step {pos.step}/{run.steps}; checkpoint {run.stopping.ckpt}")


def _save_finetuned(
    run: FinetuneRun, log_rows: list[dict[str, Any]], base: str | os.PathLike, out_dir: str | os.PathLike,
    provenance: dict[str, Any] | None,
) -> pd.DataFrame:
    """The end of fine-tuning: the EMA copied in where kept, then rank 0 writes `out_dir` (LoRA
    adapters or the whole pipeline, synthscale.json, the loss log) and removes the checkpoint, while
    the other ranks wait."""
    recipe, pipe, unet = run.recipe, run.pipe, run.unet
    unet.eval()
    if run.ema is not None:
        run.ema.copy_to(run.params)  # the saved weights are the moving average
    log = pd.DataFrame(log_rows)
    if run.rank == 0:  # rank 0 writes the folder; the ranks' weights are the same
        meta = {
            "base": str(base),
            "lora": run.lora,
            "mode": recipe["mode"],
            "pipeline_class": type(pipe).__name__,
            "recipe": recipe,
            "seed": run.seed,
            "steps": run.steps,
            "resolution": run.size,
            "loss_first": float(log["loss"].iloc[: max(1, len(log) // 10)].mean()),
            "loss_last": float(log["loss"].iloc[-max(1, len(log) // 10) :].mean()),
            **(provenance or {}),
        }
        with atomic_dir(out_dir) as tmp:
            _write_weights(run, tmp)
            write_meta(tmp, meta, sort_keys=True)
            log.to_csv(Path(tmp) / LOG, index=False)
        ckpt = run.stopping.ckpt
        if ckpt and ckpt.exists():
            ckpt.unlink()
    barrier()  # every rank leaves once rank 0's folder is complete
    return log


def _write_weights(run: FinetuneRun, folder: str | os.PathLike) -> None:
    """The trained weights into `folder`: the LoRA adapters alone, or the whole pipeline."""
    pipe, unet = run.pipe, run.unet
    if run.lora:
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
        # the adapter's peft config (rank, lora_alpha, targets) travels in the safetensors
        # metadata: without it load_lora_weights takes alpha = rank and samples at another scale
        type(pipe).save_lora_weights(
            folder,
            unet_lora_layers=layers,
            unet_lora_adapter_metadata=unet.peft_config["default"].to_dict(),
            safe_serialization=True,
        )
    else:
        for n, state in run.frozen_fp32.items():  # saved as loaded: bf16 was for encoding only
            run.frozen[n].to(dtype=torch.float32).load_state_dict(state)
        pipe.save_pretrained(folder, safe_serialization=True)


def _checkpoint_state(run: FinetuneRun, pos: FinetunePosition) -> dict[str, Any]:
    """What a fine-tuning checkpoint holds: the trained weights, optimizer, schedule, EMA and position,
    and the world size and the loader's worker count, which a resume checks (`_resume_finetune`)."""
    state = {
        "trainable": {k: v.detach() for k, v in _trainable(run.unet).items()},
        "opt": run.opt.state_dict(),
        "sched": run.sched.state_dict(),
        "step": pos.step,
        "epoch": pos.epoch,
        "batch": pos.batch,
        "log": json.dumps(pos.log_rows),
        "world_size": run.world,
        "num_workers": int(run.recipe["num_workers"]),
    }
    if run.ema is not None:
        state["ema"] = run.ema.state_dict()
    return state


# --- several GPUs: torchrun runs this module, one process per GPU ---


def finetune_run(
    base: str | os.PathLike, manifest: str | os.PathLike, prompt_files: Sequence[str | os.PathLike],
    gen: dict[str, Any], seed: int, out_dir: str | os.PathLike, checkpoint_path: str | os.PathLike,
    device: str, gpus: int, threads: int, spec_path: str | os.PathLike,
) -> None:
    """The rule finetune_generator: `finetune_generator` of config entry `gen` (its `finetune` recipe,
    its provenance) on the manifest's train split, captioned by the prompt files' strategies; in this
    process, or with `gpus` > 1 on torchrun's ranks (`run_training`: the spec is JSON, paths as strings)."""
    spec = dict(
        base=base,
        shards=[str(s) for s in split_shards(manifest, "train")],  # JSON for torchrun's ranks
        class_prompts=[read_prompts(f) for f in prompt_files],
        recipe=gen["finetune"],
        seed=seed,
        out_dir=out_dir,
        checkpoint_path=checkpoint_path,
        device=device,
        provenance=generator_provenance(gen),
    )
    run_training(finetune_generator, run_distributed, spec, gpus, threads, spec_path)


def run_distributed(spec: dict[str, Any], nproc: int, spec_path: str | os.PathLike) -> None:
    """`finetune_generator(**spec)` on `nproc` torchrun processes (DDP; synthscale.distributed.run_torchrun):
    the spec's values must be JSON (paths as strings). Raises Preempted on a stop that saved a checkpoint."""
    run_torchrun("synthscale.generation.finetune", spec, nproc, spec_path)


def main(spec_path: str) -> int:
    """torchrun entry (or a plain process): `finetune_generator(**spec)` in a rank
    (synthscale.distributed.rank_main)."""
    return rank_main(spec_path, finetune_generator)


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1]))
