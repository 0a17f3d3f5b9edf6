"""Helpers the tests share (no tests here): `REPO`, the repository root; `require` (SYNTHSCALE_REQUIRE:
skip or fail), `workflow` (Snakemake on the tiny study: `smk`, `new_workdir`, `dry`, `job_counts`),
`data` (small shards and images), `training` (a small recipe, same-weights checks, signalling a run),
`tiny_pipelines` (random-weight diffusers pipelines, offline), `ft_rank` (a fine-tuning torchrun rank that
records its batches, weights and writes), `clip_cpu_rank` (a CLIP torchrun rank whose open_clip DDP wrap
works on CPU), `preset_data` (a working directory the paper presets plan in), `slurm_cluster` (a throwaway
single-node SLURM and its fixture).

Importable as `helpers` because pyproject.toml puts `tests/` on pytest's `pythonpath`."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
