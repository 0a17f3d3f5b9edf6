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

    @property
    def seeds(self) -> list[int]:
        """Replicate training seeds (`train.seeds`): one model per (source, N, seed)."""
        return [int(s) for s in self.cfg["train"].get("seeds", [0])]

    def model(self, source: str, n: str, seed: int | str | None = None) -> str:
        """A trained classifier's weights; seed None = the first replicate seed."""
        s = self.seeds[0] if seed is None else seed
        return f"{self.r}/train/{self.arch}/{source}/n{n}/s{s}/model.safetensors"

    def train_log(self, source: str, n: str, seed: int | str | None = None) -> str:
        s = self.seeds[0] if seed is None else seed
        return f"{self.r}/train/{self.arch}/{source}/n{n}/s{s}/log.csv"

    def seed_runs(self, source: str) -> list[tuple[str, int]]:
        """Every (n_label, seed) model of one source, N-major."""
        return [(n, s) for n in self.n_labels(source) for s in self.seeds]

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
