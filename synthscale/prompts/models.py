"""Model-made prompt strategies: Word2Sen, IN-Caption and LLM scene descriptions (Fan et al. 2023).

Each configured entry of `prompt_models` is a strategy whose per-class prompt pool a job writes to
`prompts/{dataset}/{name}.jsonl`, the same file a rule-based strategy writes; generation then picks
image i's prompt from its class's pool by (seed, i) as for any strategy (synthscale.generation.generate).

- `word2sen` (He et al., CVMI-Lab/SyntheticData src/LE.py): a language model turns the class name
  into sentences: sampled, deduplicated, `count` kept per class. A seq2seq model (T5,
  `mrm8488/t5-base-finetuned-common_gen`) runs through `generate` as transformers' text2text pipeline
  did (transformers 5 dropped that pipeline); a causal LM through the `text-generation` pipeline.
- `llm` (SynthCLIP, ALIA): an instruction-tuned causal LM writes scene descriptions from a template;
  its chat template is applied when the tokenizer has one.
- Both sample `batch_size` texts per round until `count` distinct ones are in hand, for at most
  `max_rounds` rounds (null: 4 x ceil(count / batch_size), enough to fill the pool with room for
  repeats); a pool left short is reported. A prompt of either that does not name its class (the
  model may drop it) gets the class name put in front ("{name}, {prompt}"), so every prompt names
  its class as the paper's strategies do; the JSONL counts how many were named this way.
- `caption` (IN-Caption, Lei et al.): an `image-text-to-text` pipeline (BLIP, BLIP-2, any
  vision-encoder-decoder) captions the first `images_per_class` real training images of each class,
  greedily; the prompt is `format` with the class name and the caption ("a photo of {name}, {text}").

Loading is safe: safetensors only, never `trust_remote_code`. Seeds are fixed per class
(transformers.set_seed(seed + class index)), so a pool is reproducible and does not depend on the
other classes. No Snakemake import here.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from synthscale.io import atomic_path

KINDS = ("word2sen", "llm", "caption")
DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}


def looks_local(model: str) -> bool:
    """A model named by a path (not a Hub id): starts with . / ~ or exists on disk."""
    return model.startswith((".", "/", "~")) or Path(model).expanduser().exists()


def _torch_dtype(name: str):
    import torch

    return getattr(torch, DTYPES[name])


def _fill(template: str, row: dict[str, Any], **extra: str) -> str:
    """A template with the class row's name, description and hypernym (and extra fields) filled in."""
    fields = {
        "name": str(row["name"]),
        "description": str(row.get("description") or ""),
        "hypernym": str(row.get("hypernym") or ""),
        **extra,
    }
    return template.format(**fields)


def _clean(text: str) -> str:
    """One line of model output, whitespace collapsed (a multi-line answer keeps its first line)."""
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return " ".join(lines[0].split()) if lines else ""


def dedupe(texts: Iterable[str], seen: set[str] | None = None) -> list[str]:
    """Texts in order, without empties or repeats (case- and whitespace-insensitive)."""
    seen = set() if seen is None else seen
    out = []
    for t in texts:
        t = _clean(t)
        key = t.lower()
        if t and key not in seen:
            seen.add(key)
            out.append(t)
    return out


# --------------------------------------------------------------------------------------------------
# text generators: word2sen and llm
# --------------------------------------------------------------------------------------------------


class TextSampler:
    """One sampling call per class input: `n` texts from a seq2seq model or a causal LM."""

    def __init__(self, model: str, dtype: str = "float32", device: str = "cpu", chat: bool = False):
        from transformers import AutoConfig

        kw = {"trust_remote_code": False}
        self.seq2seq = bool(getattr(AutoConfig.from_pretrained(model, **kw), "is_encoder_decoder", False))
        self.device, self.chat = device, chat
        if self.seq2seq:
            from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(model, **kw)
            self.model = AutoModelForSeq2SeqLM.from_pretrained(
                model, use_safetensors=True, dtype=_torch_dtype(dtype), **kw
            ).to(device).eval()
        else:
            from transformers import pipeline

            self.pipe = pipeline(
                "text-generation",
                model=model,
                device=device,
                dtype=_torch_dtype(dtype),
                model_kwargs={"use_safetensors": True},
                **kw,
            )
            self.tokenizer = self.pipe.tokenizer
            self.chat = chat and getattr(self.tokenizer, "chat_template", None) is not None

    def __call__(self, text: str, n: int, max_new_tokens: int, sampling: dict[str, Any]) -> list[str]:
        if self.seq2seq:
            import torch

            enc = self.tokenizer([text], return_tensors="pt").to(self.device)
            with torch.no_grad():
                out = self.model.generate(
                    **enc, max_new_tokens=max_new_tokens, num_return_sequences=n, **sampling
                )
            return self.tokenizer.batch_decode(out, skip_special_tokens=True)
        prompt: Any = [{"role": "user", "content": text}] if self.chat else text
        kwargs = dict(max_new_tokens=max_new_tokens, num_return_sequences=n, **sampling)
        if self.tokenizer.pad_token_id is None:
            kwargs["pad_token_id"] = self.tokenizer.eos_token_id
        out = self.pipe(prompt, return_full_text=False, **kwargs)
        texts = []
        for o in out:
            g = o["generated_text"]
            texts.append(g[-1]["content"] if isinstance(g, list) else g)
        return texts


def max_rounds(spec: dict[str, Any]) -> int:
    """Sampling rounds allowed per class: `max_rounds`, or (null) 4 x the rounds that fill `count`."""
    if spec.get("max_rounds"):
        return int(spec["max_rounds"])
    return 4 * -(-int(spec["count"]) // int(spec["batch_size"]))


def named(prompt: str, name: str) -> str:
    """The prompt, with the class name put in front when it does not contain it (case-insensitive)."""
    return prompt if name.lower() in prompt.lower() else f"{name}, {prompt}"


def sample_pool(
    sampler, row: dict[str, Any], spec: dict[str, Any], seed: int
) -> tuple[list[str], int]:
    """Up to `count` distinct prompts for one class, and how many texts were sampled for them.

    Samples `batch_size` texts per round, for at most `max_rounds(spec)` rounds, until `count`
    distinct non-empty texts are in hand (He et al.: sample, deduplicate, keep 200). Every prompt
    names the class (`named`).
    """
    from transformers import set_seed

    set_seed(seed)
    text = _fill(spec["template"], row)
    seen: set[str] = set()
    pool: list[str] = []
    sampled = 0
    for _ in range(max_rounds(spec)):
        outs = sampler(text, spec["batch_size"], spec["max_new_tokens"], dict(spec["sampling"]))
        sampled += len(outs)
        pool += dedupe(outs, seen)
        if len(pool) >= spec["count"]:
            break
    name = str(row["name"])
    return [named(_fill(spec["format"], row, text=t, caption=t), name) for t in pool[: spec["count"]]], sampled


# --------------------------------------------------------------------------------------------------
# captions of real images: IN-Caption
# --------------------------------------------------------------------------------------------------


def first_images_per_class(
    shards: Sequence[str | os.PathLike], n_classes: int, k: int
) -> list[list[np.ndarray]]:
    """The first k images of each class in shard order, streamed; stops once every class has k."""
    from synthscale.data.shards import iter_shards

    per_class: list[list[np.ndarray]] = [[] for _ in range(n_classes)]
    full = 0
    for image, rec in iter_shards(shards, mode="RGB"):
        c = int(rec["label"])
        if len(per_class[c]) < k:
            per_class[c].append(image)
            full += len(per_class[c]) == k
            if full == n_classes:
                break
    return per_class


class Captioner:
    """An image-text-to-text pipeline (BLIP, BLIP-2, a vision encoder-decoder), greedy by default."""

    def __init__(self, model: str, dtype: str = "float32", device: str = "cpu"):
        from transformers import pipeline

        self.pipe = pipeline(
            "image-text-to-text",
            model=model,
            device=device,
            dtype=_torch_dtype(dtype),
            model_kwargs={"use_safetensors": True},
            trust_remote_code=False,
        )

    def __call__(
        self, images: Sequence[np.ndarray], prompt: str, max_new_tokens: int, sampling: dict[str, Any],
        batch_size: int,
    ) -> list[str]:
        from PIL import Image

        pil = [Image.fromarray(im.squeeze(-1) if im.shape[-1] == 1 else im).convert("RGB") for im in images]
        out = self.pipe(
            images=pil,
            text=[prompt] * len(pil),
            return_full_text=False,
            batch_size=batch_size,
            generate_kwargs={"max_new_tokens": max_new_tokens, **sampling},
        )
        return [_clean(o[0]["generated_text"] if isinstance(o, list) else o["generated_text"]) for o in out]


# --------------------------------------------------------------------------------------------------
# the job: a pool per class, written as the prompts JSONL
# --------------------------------------------------------------------------------------------------


def build_pools(
    spec: dict[str, Any],
    classes: pd.DataFrame,
    seed: int,
    device: str = "cpu",
    real_shards: Sequence[str | os.PathLike] = (),
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Per class (in index order): its prompts and counts (sampled/captioned, kept)."""
    rows = classes.sort_values("index").to_dict("records")
    kind = spec["kind"]
    if kind not in KINDS:
        raise ValueError(f"unknown prompt model kind {kind!r}; choose from {KINDS}")
    out = []
    if kind == "caption":
        from transformers import set_seed

        set_seed(seed)
        cap = Captioner(spec["model"], spec["dtype"], device)
        images = first_images_per_class(real_shards, len(rows), spec["images_per_class"])
        for row, ims in tqdm(list(zip(rows, images)), desc="captions", disable=not progress):
            caps = cap(ims, spec["caption_prompt"], spec["max_new_tokens"], dict(spec["sampling"]), spec["batch_size"]) if ims else []
            prompts = [_fill(spec["format"], row, text=c, caption=c) for c in caps]
            out.append({"row": row, "prompts": prompts, "generated": len(caps), "kept": len(prompts)})
        return out
    sampler = TextSampler(spec["model"], spec["dtype"], device, chat=kind == "llm")
    for row in tqdm(rows, desc=kind, disable=not progress):
        prompts, sampled = sample_pool(sampler, row, spec, seed + int(row["index"]))
        out.append({"row": row, "prompts": prompts, "generated": sampled, "kept": len(prompts),
                    "named": sum(p.startswith(f"{row['name']}, ") for p in prompts)})
    return out


def write_model_prompts(
    path: str | os.PathLike,
    strategy: str,
    spec: dict[str, Any],
    pools: list[dict[str, Any]],
) -> dict[str, Any]:
    """The prompts JSONL (as synthscale.prompts.strategies.write_prompts writes it) plus per-class counts.

    A class whose model produced no usable text falls back to its class name, so generation never
    meets an empty pool; the returned report says how many classes fell short of `count`.
    """
    short, empty = [], []
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        for p in pools:
            row, prompts = p["row"], list(p["prompts"])
            if not prompts:
                empty.append(str(row["name"]))
                prompts = [str(row["name"])]
            want = spec.get("count") or spec.get("images_per_class")
            if want and p["kept"] < want:
                short.append(str(row["name"]))
            rec = {"index": int(row["index"]), "id": str(row["id"]), "name": row["name"]}
            f.write(
                json.dumps(
                    {
                        **rec,
                        "strategy": strategy,
                        "prompts": prompts,
                        "model": spec["model"],
                        "kind": spec["kind"],
                        "generated": int(p["generated"]),
                        "kept": int(p["kept"]),
                        **({"named": int(p["named"])} if "named" in p else {}),
                    }
                )
                + "\n"
            )
    return {"classes": len(pools), "short": short, "empty": empty}


def model_prompts_job(
    path: str | os.PathLike,
    strategy: str,
    spec: dict[str, Any],
    classes_csv: str | os.PathLike,
    manifest: str | os.PathLike,
    device: str = "cpu",
) -> None:
    """The rule prompts_model: `make_model_prompts` for the prepared class table, its report lines
    printed to stderr (the job's log)."""
    from synthscale.data.real import read_classes

    for line in make_model_prompts(path, strategy, spec, read_classes(classes_csv), manifest, device):
        print(line, file=sys.stderr)


def make_model_prompts(
    path: str | os.PathLike,
    strategy: str,
    spec: dict[str, Any],
    classes: pd.DataFrame,
    manifest: str | os.PathLike,
    device: str = "cpu",
) -> list[str]:
    """A model-made strategy's job (rule prompts_model): its pools (`build_pools`; a captioner's from
    the real training split of `manifest`) written as the prompts JSONL (`write_model_prompts`).
    Returns the lines that report it: how many prompts, the classes short of their count, those with
    no usable text."""
    from synthscale.data.real import split_shards

    real = split_shards(manifest, "train") if spec["kind"] == "caption" else []
    pools = build_pools(spec, classes, spec["seed"], device, real)
    report = write_model_prompts(path, strategy, spec, pools)
    want = spec.get("count") or spec.get("images_per_class")
    lines = [f"{strategy}: {sum(p['kept'] for p in pools)} prompts for {report['classes']} classes"]
    if report["short"]:
        lines.append(f"{strategy}: {len(report['short'])} classes have fewer than {want} distinct prompts: "
                     f"{', '.join(report['short'][:20])}")
    if report["empty"]:
        lines.append(f"{strategy}: no usable text for {', '.join(report['empty'])}: the class name stands in")
    return lines
