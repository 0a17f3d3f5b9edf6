"""Snakemake entry for rule prepare_data: adapt snakemake.* to synthscale.data.real / synthscale.data.imagefolder."""
from synthscale.runtime import job_setup

job_setup(snakemake, fork=False)  # first; cold even in a warm run: no torch here, and every job waits for it

import logging
import sys
from pathlib import Path

from synthscale.data.real import prepare_digits
from synthscale.data.imagefolder import prepare_imagefolder

# bad files and empty eval classes are logged as warnings: into the job's log
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s", force=True)
ds, eval_sets, seed = snakemake.params.dataset, snakemake.params.eval_sets, snakemake.params.seed
out = snakemake.output
paths = dict(manifest_path=out.manifest, classes_path=out.classes)
out_dir = Path(out.manifest).parent  # the split shards: the manifest lists them relative to its folder
if ds["kind"] == "digits":
    enc = ds["encoding"]
    prepare_digits(
        out_dir, ds["image_size"], ds["test_fraction"], eval_sets, ds["shard_size"], seed,
        fmt=enc["format"], quality=enc["quality"], **paths,
    )
else:
    prepare_imagefolder(out_dir, ds, eval_sets, ds["shard_size"], seed, workers=snakemake.threads, **paths)
