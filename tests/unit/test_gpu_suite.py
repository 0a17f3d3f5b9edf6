"""benchmarks/gpu_suite.py at tiny size on the CPU: every section runs through the project's own code
paths (generate_images, the loader and train_model, train_clip, run_distributed) and the JSON holds
every figure, each finite and positive, with the device, date and versions."""
from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys

from helpers import REPO


def load_suite():
    spec = importlib.util.spec_from_file_location("gpu_suite", REPO / "benchmarks" / "gpu_suite.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_suite_tiny_reports_every_figure(tmp_path):
    suite = load_suite()
    out = tmp_path / "suite.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_suite.py"), "--tiny", "--out", str(out),
                           "--work", str(tmp_path / "work")],
                          capture_output=True, text=True, cwd=REPO, timeout=900)
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert out.exists(), tail
    result = json.loads(out.read_text())
    assert result["errors"] == {} and result["skipped"] == [] and result["missing"] == [], tail
    assert proc.returncode == 0, tail
    assert result["tiny"] and result["device"] and result["date"] and result["torch"]
    figures = result["figures"]
    names = suite.figure_names(suite.TINY)
    assert len(names) == 17 and set(names) <= set(figures)
    bad = {k: figures[k] for k in names if not (isinstance(figures[k], float) and math.isfinite(figures[k])
                                                and figures[k] > 0)}
    assert not bad, bad
    for line in ("generation_b4_compiled_img_per_s", "resnet50_loader_img_per_s", "clip_samples_per_s",
                 "ddp_world1_seconds"):
        assert f"{line}: " in proc.stdout, f"{line} is not printed"


def test_peak_comes_from_the_device_name_or_the_flag():
    suite = load_suite()
    assert suite.peak_flops("cpu", 989.0) == (989e12, "--peak-tflops")
    assert suite.PEAK_BF16_TFLOPS["H100"] == suite.PEAK_BF16_TFLOPS["H200"] == 989.0
    assert suite.PEAK_BF16_TFLOPS["A100"] == 312.0


def test_peak_table_rates_each_hopper_part_by_its_own_peak():
    """MFU divides by the device's peak: an H100 PCIe (756 TFLOP/s bf16 dense) rated as an SXM (989)
    would understate its MFU by a quarter."""
    suite = load_suite()
    assert suite.table_peak("NVIDIA H100 PCIe")[0] == 756e12
    assert suite.table_peak("NVIDIA H100 NVL")[0] == 835e12
    assert suite.table_peak("NVIDIA H100 80GB HBM3")[0] == 989e12
    assert suite.table_peak("NVIDIA H200")[0] == 989e12
    assert suite.table_peak("NVIDIA A100-SXM4-80GB")[0] == 312e12
    assert suite.table_peak("Some Future GPU") is None


def test_clip_rate_weighs_each_log_interval_by_its_steps():
    """The CLIP rate is the step-weighted mean of open_clip_train's log intervals after each epoch's
    first (start-up) step: an epoch of 1 + 10 + 2 steps at 0.1 s a step, then 0.4 s for the last 2,
    ran its 12 timed steps of 64 samples in 1.8 s; the last short interval alone would say 160/s."""
    suite = load_suite()

    def line(epoch, done, mean):
        return (f"2026-12-05,10:00:00 | INFO | Train Epoch: {epoch} [{done:>3}/832 ({done / 8.32:.0f}%)] "
                f"Data (t): 0.001 Batch (t): {mean:.3f}, {64 / mean:#g}/s, {64 / mean:#g}/s/gpu LR: 0.000500 "
                f"Logit Scale: 14.286 Contrastive_loss: 4.1589 (4.1589) Loss: 4.1589 (4.1589)\n")

    epoch = line(0, 64, 9.0) + line(0, 704, 0.1) + line(0, 832, 0.4)
    assert math.isclose(suite.clip_rate_from_log(epoch, 64), 12 * 64 / 1.8)
    # a second epoch's first step (start-up again) is left out too; its intervals count
    two = epoch + line(1, 64, 5.0) + line(1, 832, 0.1)
    assert math.isclose(suite.clip_rate_from_log(two, 64), (12 + 12) * 64 / (1.8 + 1.2))
    assert suite.clip_rate_from_log(line(0, 64, 9.0), 64) is None
    assert suite.clip_rate_from_log("", 64) is None
