"""Snakemake entry for rule prepare_data: adapt snakemake.* to synthscale.data.prepare.prepare_dataset."""
from synthscale.runtime import job_setup

job_setup(snakemake, fork=False)  # first; cold even in a warm run: no torch here, and every job waits for it

import logging
import sys

from synthscale.data.prepare import prepare_dataset

# bad files and empty eval classes are logged as warnings: into the job's log
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s", force=True)
p, out = snakemake.params, snakemake.output
prepare_dataset(p.dataset, p.eval_sets, p.seed, out.manifest, out.classes, workers=snakemake.threads)
