"""Filtering synthetic sets (He et al.: CLIP score; ALIA: a real-data classifier's confidence).

A filter over-generates and keeps a class-balanced set: position j of the filtered set holds class
j mod C (as the unfiltered set does), filled with that class's next passing image in index order. So
every prefix, and hence every N, holds N/C images per class (within one), and a filtered set is
nested in N like any other: its first N images do not depend on the largest N. A class that passes
more rarely than the others sets the pace; when the generated shards run out first, the remaining
positions go round-robin to the classes that still have passing images (as many as possible per
class), and the counts list the classes left short. A filter job streams the unfiltered set's shards
in order, scores them batch by batch, writes the kept images (bytes untouched) into shards of the same
size and format, each record keeping its original index plus the filter's score, and stops once it has
the largest N. Passing images that wait for their class's turn are held in memory, at most
`class_buffer(shard_size, C)` per class (further ones are counted as passed, not kept). It also writes
counts: how many images it looked at, passed and kept, per class, so the report can say what a
filter cost.

Scorers:
- `judge`: p(class) under the quality stage's judge (synthscale.quality.judge.load_judge); an image passes
  when p(its class) >= threshold.
- `clip`: cosine similarity of the image and its prompt under an open_clip model: a model name with
  a local weights file, or `local-dir:FOLDER` with open_clip_config.json and
  open_clip_model.safetensors (the layout of open_clip's Hub exports; the study's CLIP arm does not
  write it, so the folder must exist before the run). Passing: the top `keep_fraction` of each
  generated shard (ties go to the lower index), a rule that needs no global ranking, so filtering
  still streams and stays nested.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from synthscale.data.real import manifest_classes
from synthscale.io import write_json
from synthscale.data.shards import decode_image, image_ext, iter_samples, write_shard
from synthscale.clip.names import local_dir


class FilterShortfall(RuntimeError):
    """Fewer images passed than the filtered set needs: raise the filter's overgenerate factor."""


def iter_raw(paths: Sequence[str | os.PathLike]) -> Iterator[tuple[bytes, str, dict[str, Any]]]:
    """(encoded image bytes, extension, record) of every sample, in shard order; nothing re-encoded."""
    for key, files in iter_samples(paths):
        ext = image_ext(files, key)
        yield files[ext], ext, json.loads(files["json"])


# --------------------------------------------------------------------------------------------------
# scorers
# --------------------------------------------------------------------------------------------------


class JudgeScorer:
    """p(class) of each image under the judge, at the dataset's image size."""

    def __init__(self, judge, image_size: int, device: str = "cpu"):
        self.judge, self.image_size, self.device = judge, image_size, device

    @torch.no_grad()
    def __call__(self, images: np.ndarray, labels: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
        from synthscale.classifier.train import resize_images

        x = self.judge.preprocess(resize_images(images, self.image_size)).to(self.device)
        logits, _ = self.judge.forward(x)
        p = F.softmax(logits.float(), dim=1).cpu().numpy()
        return p[np.arange(len(labels)), labels]


class ClipScorer:
    """Cosine similarity of each image and its prompt under an open_clip model (local weights only)."""

    def __init__(self, model: str, pretrained: str | None = None, device: str = "cpu"):
        import open_clip

        if not (pretrained or local_dir(model) is not None):
            raise ValueError(f"open_clip model {model!r} needs local weights (`pretrained`)")
        if pretrained and not os.path.exists(pretrained):
            raise FileNotFoundError(f"open_clip weights {pretrained!r} do not exist")
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(
            model, pretrained=pretrained, device=device
        )
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(model)
        self.device = device
        self._text: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def _text_features(self, prompts: Sequence[str]) -> torch.Tensor:
        new = [p for p in dict.fromkeys(prompts) if p not in self._text]
        if new:
            feats = self.model.encode_text(self.tokenizer(new).to(self.device))
            for p, f in zip(new, F.normalize(feats.float(), dim=-1)):
                self._text[p] = f
        return torch.stack([self._text[p] for p in prompts])

    @torch.no_grad()
    def __call__(self, images: np.ndarray, labels: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
        from PIL import Image

        x = torch.stack(
            [self.preprocess(Image.fromarray(im.squeeze(-1) if im.shape[-1] == 1 else im).convert("RGB")) for im in images]
        ).to(self.device)
        img = F.normalize(self.model.encode_image(x).float(), dim=-1)
        return (img * self._text_features(list(prompts))).sum(-1).cpu().numpy()


def open_scorer(
    spec: dict[str, Any], judge_path: str | os.PathLike | Sequence[str | os.PathLike] | None,
    judge_spec: dict[str, Any], image_size: int, device: str = "cpu",
):
    """The scorer a filter spec names; a judge filter's weights are `judge_path` (a rule's judge
    inputs as they come: synthscale.quality.judge.judge_file)."""
    if spec["kind"] == "judge":
        from synthscale.quality.judge import load_judge

        return JudgeScorer(load_judge(judge_spec, judge_path, device), image_size, device)
    if spec["kind"] == "clip":
        return ClipScorer(spec["clip"]["model"], spec["clip"].get("pretrained"), device)
    raise ValueError(f"unknown filter kind {spec['kind']!r}")


# --------------------------------------------------------------------------------------------------
# the pass rule and the streaming filter
# --------------------------------------------------------------------------------------------------


def passes(scores: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """Which images of one generated shard pass: p(class) >= threshold (judge), or the top
    keep_fraction of the shard by score (clip; a stable sort gives ties to the lower index)."""
    scores = np.asarray(scores, dtype=np.float64)
    if spec["kind"] == "judge":
        return scores >= spec["threshold"]
    keep = math.ceil(spec["keep_fraction"] * len(scores))
    order = np.argsort(-scores, kind="stable")
    mask = np.zeros(len(scores), dtype=bool)
    mask[order[:keep]] = True
    return mask


def class_buffer(shard_size: int, n_classes: int) -> int:
    """Passing images of one class held while they wait for its turn: two shards' worth in all."""
    return max(8, math.ceil(2 * shard_size / n_classes))


@dataclass
class FilterResult:
    counts: dict[str, Any]
    records: list[dict[str, Any]]


def filter_set(
    shards: Sequence[str | os.PathLike],
    scorer,
    spec: dict[str, Any],
    name: str,
    out_paths: Sequence[str | os.PathLike],
    shard_size: int,
    n_classes: int,
    batch_size: int = 256,
    progress: bool = True,
) -> FilterResult:
    """Keep len(out_paths) x shard_size passing images, class-balanced (position j: class j mod C,
    that class's next passing image in index order); write them.

    Reads one generated shard at a time (scored in batches of `batch_size`) and holds at most one
    generated shard, one output shard and `class_buffer` waiting images per class. When the generated
    shards run out, the remaining positions go round-robin to the classes with images left. Raises
    FilterShortfall, naming the config key to raise, when fewer images passed than the set needs.
    """
    from tqdm.auto import tqdm

    seen, passed, seen_scores = Counter(), Counter(), []
    bar = tqdm(total=len(out_paths) * shard_size, desc=f"filter {name}", unit="img", disable=not progress)
    out = _BalancedSet(name, out_paths, shard_size, n_classes, bar)
    for shard in shards:
        if out.full:
            break
        samples = list(iter_raw([shard]))
        scores = _score_samples(samples, scorer, batch_size)
        for (data, ext, rec), score, ok in zip(samples, scores, passes(scores, spec)):
            if out.full:
                break
            c = int(rec["label"])
            seen[c] += 1
            seen_scores.append(float(score))
            if ok:
                passed[c] += 1
                out.add(shard, c, data, ext, rec, float(score))
    out.drain()
    bar.close()
    if not out.full:
        raise FilterShortfall(_shortfall_message(name, spec, out, seen, passed))
    counts = _filter_counts(name, spec, len(shards), shard_size, n_classes, out, seen, passed, seen_scores)
    return FilterResult(counts, out.written)


def _score_samples(samples: list[tuple[bytes, str, dict[str, Any]]], scorer, batch_size: int) -> np.ndarray:
    """The scorer's score of every sample of a shard, in batches of `batch_size`."""
    scores = np.empty(len(samples))
    for s in range(0, len(samples), batch_size):
        chunk = samples[s : s + batch_size]
        images = np.stack([decode_image(b, "RGB") for b, _, _ in chunk])
        labels = np.asarray([int(r["label"]) for _, _, r in chunk])
        prompts = [str(r.get("prompt", "")) for _, _, r in chunk]
        scores[s : s + len(chunk)] = scorer(images, labels, prompts)
    return scores


class _BalancedSet:
    """The filtered set as it is written: position j takes class j mod C's next passing image, each
    class holding at most `class_buffer` images waiting; shards are written as they fill."""

    def __init__(self, name: str, out_paths: Sequence[str | os.PathLike], shard_size: int, n_classes: int, bar):
        self.name, self.out_paths, self.shard_size, self.n_classes, self.bar = (
            name, out_paths, shard_size, n_classes, bar
        )
        self.waiting: list[deque] = [deque() for _ in range(n_classes)]
        self.cap = class_buffer(shard_size, n_classes)
        self.turn = 0  # the class whose image fills the next position
        self.k_out = 0
        self.fmt: str | None = None
        self.buffer: list[tuple[bytes, dict[str, Any]]] = []
        self.written: list[dict[str, Any]] = []
        self.kept = Counter()
        self.kept_scores: list[float] = []

    @property
    def full(self) -> bool:
        return self.k_out == len(self.out_paths)

    def add(self, shard, c: int, data: bytes, ext: str, rec: dict[str, Any], score: float) -> None:
        """A passing image of class c: it waits (if its class has room), then every position whose
        class has an image waiting is filled, in turn."""
        self.fmt = self.fmt or ext
        if ext != self.fmt:
            raise ValueError(f"{shard}: mixed image formats {self.fmt} and {ext} in one set")
        if len(self.waiting[c]) < self.cap:
            self.waiting[c].append((data, rec, score))
        while not self.full and self.waiting[self.turn]:
            self._emit(self.turn)
            self.turn = (self.turn + 1) % self.n_classes

    def drain(self) -> None:
        """The generated shards ran out: the remaining positions go round-robin to classes with images left."""
        while not self.full and any(self.waiting):
            if self.waiting[self.turn]:
                self._emit(self.turn)
            self.turn = (self.turn + 1) % self.n_classes

    def _emit(self, c: int) -> None:
        data, rec, score = self.waiting[c].popleft()
        # the key is the position in the filtered set (nested N reads keys); `index` stays the original
        n = len(self.written)
        out = {**rec, "key": f"{n:08d}", "filter": self.name, "filter_score": score, "filtered_index": n}
        self.buffer.append((data, out))
        self.written.append(out)
        self.kept[c] += 1
        self.kept_scores.append(score)
        self.bar.update(1)
        if len(self.buffer) == self.shard_size:
            write_shard(self.out_paths[self.k_out], [b for b, _ in self.buffer], [r for _, r in self.buffer],
                        fmt={"jpg": "jpeg"}.get(self.fmt, self.fmt))
            self.buffer, self.k_out = [], self.k_out + 1


def _shortfall_message(name: str, spec: dict[str, Any], out: _BalancedSet, seen: Counter, passed: Counter) -> str:
    n_seen, have = sum(seen.values()), len(out.written)
    target = len(out.out_paths) * out.shard_size
    rate = have / max(n_seen, 1)
    need = spec["overgenerate"] * target / max(have, 1) if have else float("inf")
    return (
        f"filter {name!r}: only {have} of {n_seen} generated images passed (and fit the class "
        f"balance: {sum(passed.values())} passed in all) but the filtered set "
        f"needs {target}; raise config key filter_specs.{name}.overgenerate (now "
        f"{spec['overgenerate']:g}; the pass rate {rate:.3f} asks for about {need:.2f})"
    )


def _filter_counts(
    name: str, spec: dict[str, Any], n_shards: int, shard_size: int, n_classes: int, out: _BalancedSet,
    seen: Counter, passed: Counter, seen_scores: list[float],
) -> dict[str, Any]:
    """The filtered set's counts JSON: what was generated, seen, passed and kept, per class too."""
    n_seen, written, kept = sum(seen.values()), out.written, out.kept
    return {
        "filter": name,
        "kind": spec["kind"],
        "threshold": spec["threshold"] if spec["kind"] == "judge" else None,
        "keep_fraction": spec["keep_fraction"] if spec["kind"] == "clip" else None,
        "overgenerate": spec["overgenerate"],
        "generated_shards": n_shards,
        "generated": n_shards * shard_size,
        "seen": n_seen,
        "passed": sum(passed.values()),
        "kept": len(written),
        "pass_rate": sum(passed.values()) / max(n_seen, 1),
        "cost": n_seen / max(len(written), 1),
        "mean_score_seen": float(np.mean(seen_scores)) if seen_scores else None,
        "mean_score_kept": float(np.mean(out.kept_scores)) if out.kept_scores else None,
        "classes_short": [c for c in range(n_classes) if kept[c] < len(written) // n_classes],
        "per_class": [
            {"class_index": c, "seen": seen[c], "passed": passed[c], "kept": kept[c]} for c in range(n_classes)
        ],
    }


def filter_one_set(
    shards: Sequence[str | os.PathLike], spec: dict[str, Any], name: str, out_paths: Sequence[str | os.PathLike],
    counts_path: str | os.PathLike, shard_size: int, manifest: str | os.PathLike,
    judge_path: str | os.PathLike | Sequence[str | os.PathLike] | None, judge_spec: dict[str, Any],
    image_size: int, device: str = "cpu",
) -> dict[str, Any]:
    """The rule filter_set: `run_filter` of one set with the scorer its spec names (`open_scorer`) and
    the class count of the prepared dataset (its manifest)."""
    scorer = open_scorer(spec, judge_path, judge_spec, image_size, device)
    return run_filter(shards, spec, name, out_paths, counts_path, shard_size, manifest_classes(manifest), scorer)


def run_filter(
    shards: Sequence[str | os.PathLike],
    spec: dict[str, Any],
    name: str,
    out_paths: Sequence[str | os.PathLike],
    counts_path: str | os.PathLike,
    shard_size: int,
    n_classes: int,
    scorer,
    progress: bool = True,
) -> dict[str, Any]:
    """filter_set, then the counts JSON (written last: it marks the filtered set complete)."""
    res = filter_set(
        shards, scorer, spec, name, out_paths, shard_size, n_classes, spec["batch_size"], progress
    )
    write_json(counts_path, res.counts)
    return res.counts
