"""Helpers the tests share (no tests here): `REPO`, the repository root; `require` (SYNTHSCALE_REQUIRE:
skip or fail), `workflow` (Snakemake on the tiny study: `smk`, `new_workdir`, `dry`, `dry_jobs`,
`job_counts`), `data` (small shards and images), `training` (a small recipe, same-weights checks,
signalling a run), `tiny_pipelines` (random-weight diffusers pipelines, offline), `tiny_prompt_models` (a
random T5, GPT-2 and BLIP with offline tokenizers), `tiny_clip` (a random open_clip model in the Hub
layout), `ft_rank` (a fine-tuning torchrun rank that records its batches, weights and writes),
`clip_cpu_rank` (a CLIP torchrun rank whose open_clip DDP wrap works on CPU), `preset_data` (a working
directory the paper presets plan in), `slurm_cluster` (a throwaway single-node SLURM and its fixture).

Importable as `helpers` because pyproject.toml puts `tests/` on pytest's `pythonpath`."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
