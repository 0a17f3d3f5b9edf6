"""The study's file targets: one path per grid point, derived from the checked config alone.

Sources of training data are named like paths:
- `real` (the real training split: n{N} takes its first N images; `nall` takes all of it)
- `synthetic/{generator}/g{guidance}/{strategy}` (n{N} takes the first N images of its shards)
- `mix/real{R}/synthetic/{generator}/g{guidance}/{strategy}` (the first R real images, or `realall`,
  plus the first N images of the synthetic set at n{N})
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


def shard_name(k: int) -> str:
    return f"shard-{k:06d}.tar"


def shards_for(n: int, shard_size: int) -> int:
    """Nested N: a set of N images is the first ceil(N / S) shards."""
    if n < 1 or shard_size < 1:
        raise ValueError(f"N and shard size must be positive, got {n} and {shard_size}")
    return -(-n // shard_size)


SOURCE_REGEX = r"real|synthetic/[^/]+/g[^/]+/[^/]+"
# a mixed source: real{R} in front of any synthetic source name
MIX_PREFIX_REGEX = r"mix/real(?:\d+|all)/"
SOURCE_REGEX = rf"{MIX_PREFIX_REGEX}(?:{SOURCE_REGEX})|{SOURCE_REGEX}"
N_REGEX = r"\d+|all"


def fmt_guidance(g: float) -> str:
    """Guidance as it appears in paths: 2 and 2.0 both give "2", 1.5 gives "1.5"."""
    return f"{float(g):g}"


def synthetic_source(generator: str, guidance: float, strategy: str) -> str:
    return f"synthetic/{generator}/g{fmt_guidance(guidance)}/{strategy}"


@dataclass(frozen=True)
class Source:
    kind: str  # "real", "synthetic" or "mix"
    generator: str | None = None
    guidance: float | None = None
    strategy: str | None = None
    real_n: str | None = None  # mix only: the real images, "R" or "all"

    @property
    def synthetic(self) -> "Source":
        """A mixed source's synthetic part (a synthetic source is its own)."""
        return replace(self, kind="synthetic", real_n=None)

    @property
    def name(self) -> str:
        if self.kind == "real":
            return "real"
        if self.kind == "mix":
            return mix_source(self.real_n, self.synthetic.name)
        return synthetic_source(self.generator, self.guidance, self.strategy)


def mix_source(real_n: int | str, synthetic: str) -> str:
    """The name of a mixed source: `mix/real{R}/` in front of the synthetic source's name."""
    return f"mix/real{real_n}/{synthetic}"


def parse_source(source: str) -> Source:
    if source == "real":
        return Source("real")
    if source.startswith("mix/"):
        head, _, rest = source[len("mix/") :].partition("/")
        r = head[len("real") :]
        if not head.startswith("real") or not (r == "all" or r.isdigit()) or r.startswith("0"):
            raise ValueError(f"not a mixed source name (mix/real{{R}}/synthetic/...): {source!r}")
        syn = parse_source(rest)
        if syn.kind != "synthetic":
            raise ValueError(f"a mixed source needs a synthetic part: {source!r}")
        return replace(syn, kind="mix", real_n=r)
    parts = source.split("/")
    if len(parts) != 4 or parts[0] != "synthetic" or not parts[2].startswith("g"):
        raise ValueError(f"not a source name: {source!r}")
    return Source("synthetic", parts[1], float(parts[2][1:]), parts[3])


def train_counts(source: str, n_label: str, n_real_train: int) -> tuple[int, int]:
    """(real images, synthetic images) a run trained on; `all` real is the real split's size."""
    src = parse_source(source)
    if src.kind == "real":
        return (n_real_train if n_label == "all" else int(n_label)), 0
    if src.kind == "synthetic":
        return 0, int(n_label)
    return (n_real_train if src.real_n == "all" else int(src.real_n)), int(n_label)


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
        return runs + [r for r in self.mix_runs() if r not in runs]

    # --- real + synthetic mixes (config section `mix`) ---
    def mix_sets(self) -> list[Source]:
        """The synthetic sets that are mixed with real data: `mix.sets`, or the whole grid."""
        sets = self.cfg.get("mix", {}).get("sets", "all")
        if sets == "all":
            return self.synthetic_grid()
        return [Source("synthetic", s["generator"], float(s["guidance"]), s["strategy"]) for s in sets]

    def mix_real(self) -> list[tuple[int | str, list[int], list[float]]]:
        """(R, absolute amounts, multiples) per mix.real_n entry.

        An entry that names amounts of its own (either key) replaces the section's amounts.
        """
        mix = self.cfg.get("mix", {})
        out = []
        for e in mix.get("real_n", []):
            spec = e if isinstance(e, dict) else {"n": e}
            own = "synthetic_n" in spec or "synthetic_multiples" in spec
            amounts = spec if own else mix
            out.append(
                (
                    spec["n"],
                    list(amounts.get("synthetic_n", [])),
                    list(amounts.get("synthetic_multiples", [])),
                )
            )
        return out

    def real_count(self, real_n: int | str) -> int | None:
        """Real images behind a real_n value; None for `all` when mix.full_real_n is unset."""
        if real_n == "all":
            return self.cfg.get("mix", {}).get("full_real_n")
        return int(real_n)

    def mix_amounts(self, real_n: int | str, absolute: list[int], multiples: list[float]) -> list[int]:
        """Synthetic amounts added to real_n: the absolute ones, then multiples of the real count."""
        amounts = list(absolute)
        if multiples:
            count = self.real_count(real_n)
            if count is None:
                raise ValueError("mix.full_real_n is needed for multiples of real_n 'all'")
            amounts += [max(1, round(m * count)) for m in multiples]
        return list(dict.fromkeys(amounts))

    def mix_runs(self) -> list[tuple[str, str]]:
        """Every mixed (source, n), n being the synthetic amount, plus the real-only run at each real_n."""
        runs = []
        for r, absolute, multiples in self.mix_real():
            if self.cfg["mix"].get("real_only_baselines", True):
                runs.append(("real", str(r)))
            amounts = self.mix_amounts(r, absolute, multiples)
            runs += [(mix_source(r, s.name), str(n)) for s in self.mix_sets() for n in amounts]
        return runs

    def train_parts(self, source: str, n: str) -> list[dict[str, Any]]:
        """The training data of a run as parts: real first, then synthetic.

        A part is {"shards": [...], "limit": N or None} (the first N images of its shards), or, for
        the real split whose shard names the manifest holds, {"split": "train", "limit": ...}.
        """
        src = parse_source(source)
        if src.kind == "real":
            return [{"split": "train", "limit": None if n == "all" else int(n)}]
        syn_n = self.max_n if n == "all" else int(n)
        syn = src.synthetic
        shards = self.shards(syn.generator, syn.guidance, syn.strategy, syn_n)
        part = {"shards": shards, "limit": None if n == "all" else syn_n}
        if src.kind == "synthetic":
            return [part]
        real = {"split": "train", "limit": None if src.real_n == "all" else int(src.real_n)}
        return [real, part]

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
