"""benchmarks/compare_results.py: two results folders are the same study's results exactly when every
result file matches byte for byte; logs, timing files and timing columns do not count."""

import importlib.util
from pathlib import Path

from helpers import REPO

_spec = importlib.util.spec_from_file_location(
    "compare_results", REPO / "benchmarks" / "compare_results.py"
)
cmp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cmp)


def _study(root: Path, *, weight: bytes = b"\x00\x01", seconds: str = "0.5", log: str = "ok",
           loss: str = "2.25", cost: str = "0.01") -> Path:
    files = {
        "train/resnet18/real/n30/s0/model.safetensors": weight,
        "train/resnet18/real/n30/s0/log.csv": f"epoch,step,train_loss,seconds\n1,1,{loss},{seconds}\n".encode(),
        "summary.csv": b"source,n,top1\nreal,30,0.5\n",
        "logs/train/real/n30/s0.log": log.encode(),
        "benchmarks/train_classifier/real/n30/s0.tsv": seconds.encode(),
        "cost.csv": f"source,total_h\nreal,{cost}\n".encode(),
        "plots/cost_per_gain.png": cost.encode(),
        "synthetic/tinydigits/g2/classname/shard-000000.tar": b"tar bytes",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def test_identical_studies_differ_only_in_time(tmp_path, capsys):
    a = _study(tmp_path / "a")
    b = _study(tmp_path / "b", seconds="9.75", log="other log", cost="0.02")
    report = cmp.compare(a, b)
    assert report["differ"] == [] and report["only_a"] == [] and report["only_b"] == []
    assert "train/resnet18/real/n30/s0/log.csv" in report["same"]
    assert "train/resnet18/real/n30/s0/model.safetensors" in report["same"]
    assert cmp.main([str(a), str(b)]) == 0
    assert "identical: 4 files" in capsys.readouterr().out


def test_one_changed_weight_byte_or_loss_is_a_difference(tmp_path):
    a = _study(tmp_path / "a")
    assert cmp.compare(a, _study(tmp_path / "w", weight=b"\x00\x02"))["differ"] == [
        "train/resnet18/real/n30/s0/model.safetensors"
    ]
    # the timing column is left out, the loss beside it is not
    assert cmp.compare(a, _study(tmp_path / "l", loss="2.26"))["differ"] == [
        "train/resnet18/real/n30/s0/log.csv"
    ]


def test_a_missing_or_extra_result_fails(tmp_path, capsys):
    a = _study(tmp_path / "a")
    b = _study(tmp_path / "b")
    (b / "summary.csv").unlink()
    (b / "extra.csv").write_text("x\n1\n")
    report = cmp.compare(a, b)
    assert report["only_a"] == ["summary.csv"] and report["only_b"] == ["extra.csv"]
    assert cmp.main([str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "summary.csv" in out and "extra.csv" in out


def test_the_folders_own_location_is_not_a_difference(tmp_path):
    """A fine-tuned generator records its base's path: two runs in two folders record two paths."""
    a, b = _study(tmp_path / "a"), _study(tmp_path / "b")
    for root in (a, b):
        cfg = root / "generators" / "ft" / "synthscale.json"
        cfg.parent.mkdir(parents=True)
        cfg.write_text(f'{{"base": "{root.resolve()}/generators/base"}}')
    assert cmp.compare(a, b)["differ"] == []
    (b / "generators" / "ft" / "synthscale.json").write_text('{"base": "/elsewhere/generators/base"}')
    assert cmp.compare(a, b)["differ"] == ["generators/ft/synthscale.json"]
