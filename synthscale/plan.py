"""The study's file targets: one path per grid point, derived from the checked config alone.

Sources of training data are named like paths:
- `real` (the real training split: n{N} takes its first N images; `nall` takes all of it)
- `synthetic/{generator}/g{guidance}/{strategy}` (n{N} takes the first N images of its shards)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def shard_name(k: int) -> str:
    return f"shard-{k:06d}.tar"


def shards_for(n: int, shard_size: int) -> int:
    """Nested N: a set of N images is the first ceil(N / S) shards."""
    if n < 1 or shard_size < 1:
        raise ValueError(f"N and shard size must be positive, got {n} and {shard_size}")
    return -(-n // shard_size)


SOURCE_REGEX = r"real|synthetic/[^/]+/g[^/]+/[^/]+"
N_REGEX = r"\d+|all"


def fmt_guidance(g: float) -> str:
    """Guidance as it appears in paths: 2 and 2.0 both give "2", 1.5 gives "1.5"."""
    return f"{float(g):g}"


def synthetic_source(generator: str, guidance: float, strategy: str) -> str:
    return f"synthetic/{generator}/g{fmt_guidance(guidance)}/{strategy}"


@dataclass(frozen=True)
class Source:
    kind: str  # "real" or "synthetic"
    generator: str | None = None
    guidance: float | None = None
    strategy: str | None = None

    @property
    def name(self) -> str:
        if self.kind == "real":
            return "real"
        return synthetic_source(self.generator, self.guidance, self.strategy)


def parse_source(source: str) -> Source:
    if source == "real":
        return Source("real")
    parts = source.split("/")
    if len(parts) != 4 or parts[0] != "synthetic" or not parts[2].startswith("g"):
        raise ValueError(f"not a source name: {source!r}")
    return Source("synthetic", parts[1], float(parts[2][1:]), parts[3])


class Plan:
    """Paths and target lists of one study."""

    def __init__(self, cfg: dict[str, Any]):
        self.cfg = cfg
        self.r = cfg["results"]
        self.dataset = cfg["dataset"]["name"]
        self.arch = cfg["train"]["arch"]

    # --- data, prompts, generators ---
    @property
    def manifest(self) -> str:
        return f"{self.r}/data/{self.dataset}/splits.json"

    @property
    def classes(self) -> str:
        return f"{self.r}/data/{self.dataset}/classes.csv"

    def prompts(self, strategy: str) -> str:
        return f"{self.r}/prompts/{self.dataset}/{strategy}.jsonl"

    def generator(self, name: str) -> dict[str, Any]:
        for g in self.cfg["generators"]:
            if g["name"] == name:
                return g
        raise KeyError(f"no generator named {name!r} in the config")

    def generator_dir(self, name: str) -> str:
        return f"{self.r}/generators/{name}"

    # --- synthetic sets ---
    def synthetic_dir(self, generator: str, guidance: float | str, strategy: str) -> str:
        g = guidance if isinstance(guidance, str) else fmt_guidance(guidance)
        return f"{self.r}/synthetic/{generator}/g{g}/{strategy}"

    def shards(self, generator: str, guidance: float | str, strategy: str, n: int) -> list[str]:
        folder = self.synthetic_dir(generator, guidance, strategy)
        k = shards_for(n, self.cfg["generation"]["shard_size"])
        return [f"{folder}/{shard_name(i)}" for i in range(k)]

    def synthetic_grid(self) -> list[Source]:
        return [
            Source("synthetic", g["name"], float(gs), s)
            for g in self.cfg["generators"]
            for gs in self.cfg["guidance"]
            for s in self.cfg["strategies"]
        ]

    @property
    def max_n(self) -> int:
        return max(self.cfg["n_images"])

    def all_shards(self) -> list[str]:
        return [
            p
            for src in self.synthetic_grid()
            for p in self.shards(src.generator, src.guidance, src.strategy, self.max_n)
        ]

    # --- training and evaluation ---
    def runs(self) -> list[tuple[str, str]]:
        """Every (source, n) pair to train: synthetic at each N, real at each N, real at all."""
        runs = [(s.name, str(n)) for s in self.synthetic_grid() for n in self.cfg["n_images"]]
        if self.cfg["train"]["real_baseline"]:
            runs += [("real", str(n)) for n in self.cfg["n_images"]]
        if self.cfg["train"]["real_full"]:
            runs.append(("real", "all"))
        return runs

    def model(self, source: str, n: str) -> str:
        return f"{self.r}/train/{self.arch}/{source}/n{n}/model.safetensors"

    def train_log(self, source: str, n: str) -> str:
        return f"{self.r}/train/{self.arch}/{source}/n{n}/log.csv"

    def sources(self) -> list[str]:
        """Training sources in run order, each once."""
        return list(dict.fromkeys(s for s, _ in self.runs()))

    def n_labels(self, source: str) -> list[str]:
        """The training sizes of one source ("all" for the whole real split)."""
        return [n for s, n in self.runs() if s == source]

    # one evaluation job per source covers all its N: evaluation takes a second, its imports many
    def eval_csv(self, source: str) -> str:
        return f"{self.r}/eval/{self.arch}/{source}/metrics.csv"

    def eval_per_class(self, source: str) -> str:
        return f"{self.r}/eval/{self.arch}/{source}/per_class.csv"

    def all_eval(self) -> list[str]:
        return [self.eval_csv(s) for s in self.sources()]

    def all_eval_per_class(self) -> list[str]:
        return [self.eval_per_class(s) for s in self.sources()]

    # --- analysis ---
    @property
    def summary(self) -> str:
        return f"{self.r}/summary.csv"

    @property
    def per_class(self) -> str:
        return f"{self.r}/per_class.csv"

    @property
    def scaling(self) -> str:
        return f"{self.r}/scaling.csv"

    def plot(self, name: str) -> str:
        return f"{self.r}/plots/{name}.png"

    def sample_grid(self, src: Source) -> str:
        return f"{self.r}/plots/samples/{src.generator}_g{fmt_guidance(src.guidance)}_{src.strategy}.png"

    # --- CLIP (Fan et al.'s CLIP arm): sources real, synthetic/..., mixed/... (synthetic + real) ---
    def clip_synthetic(self) -> list[Source]:
        """The synthetic sets that CLIPs train on (`clip.sources`: all, none or a list)."""
        sel = self.cfg["clip"]["sources"]
        if sel == "all":
            return self.synthetic_grid()
        if sel == "none":
            return []
        return [Source("synthetic", s["generator"], float(s["guidance"]), s["strategy"]) for s in sel]

    def clip_n(self) -> list[int]:
        return list(self.cfg["clip"]["n_images"] or self.cfg["n_images"])

    def clip_mix_real_n(self) -> int:
        return int(self.cfg["clip"]["mix_real_n"] or max(self.clip_n()))

    def clip_sources(self) -> list[str]:
        """CLIP training sources in report order: real, each synthetic set, then each synthetic + real."""
        if not self.cfg["clip"]["enabled"]:
            return []
        syn = [s.name for s in self.clip_synthetic()]
        out = ["real"] if self.cfg["clip"]["real"] else []
        out += syn
        if self.cfg["clip"]["mixed"]:
            out += [clip_mixed_source(s) for s in syn]
        return out

    def clip_runs(self) -> list[tuple[str, str]]:
        return [(s, str(n)) for s in self.clip_sources() for n in self.clip_n()]

    def clip_dir(self, source: str, n: str | int) -> str:
        return f"{self.r}/clip/{source}/n{n}"

    def clip_model(self, source: str, n: str | int) -> str:
        return f"{self.clip_dir(source, n)}/model.safetensors"

    def clip_eval_csv(self, source: str) -> str:
        return f"{self.r}/clip/eval/{source}/metrics.csv"

    @property
    def clip_summary(self) -> str:
        return f"{self.r}/clip/summary.csv"

    @property
    def clip_scaling(self) -> str:
        return f"{self.r}/clip/scaling.csv"

    @property
    def clip_table(self) -> str:
        return f"{self.r}/clip/zero_shot.csv"

    @property
    def clip_findings(self) -> str:
        return f"{self.r}/clip/findings.html"

    def clip_targets(self) -> list[str]:
        """What rule all needs from the CLIP arm (empty when it is off)."""
        if not self.clip_sources():
            return []
        return [self.clip_summary, self.clip_scaling, self.clip_table, self.plot("clip_scaling"),
                self.clip_findings]


CLIP_SOURCE_REGEX = r"real|(synthetic|mixed)/[^/]+/g[^/]+/[^/]+"


def clip_mixed_source(synthetic: str) -> str:
    """`synthetic/...` -> `mixed/...`: the same synthetic set with the first mix_real_n real pairs."""
    if not synthetic.startswith("synthetic/"):
        raise ValueError(f"not a synthetic source: {synthetic!r}")
    return "mixed/" + synthetic[len("synthetic/"):]


def parse_clip_source(source: str) -> tuple[str, Source | None]:
    """(kind, synthetic Source or None) of a CLIP source: real, synthetic/... or mixed/..."""
    if source == "real":
        return "real", None
    if source.startswith("mixed/"):
        return "mixed", parse_source("synthetic/" + source[len("mixed/"):])
    return "synthetic", parse_source(source)
