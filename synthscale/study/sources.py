"""Source names: what a model trained on, named like a path. The one place they are built and parsed.

The grammar (Plan builds paths from these names; rules match them with the regexes below):

    source    := "real" | synthetic | mix | mixed
    synthetic := "synthetic/" {generator} "/g" {guidance} "/" {strategy} ["/f-" {filter}]
    mix       := "mix/real" ({R} | "all") "/" synthetic          classifiers only
    mixed     := "mixed/" {generator} "/g" {guidance} "/" {strategy}   CLIPs only

- `real`: the real training split; at n{N} its first N images (`nall`: all of it).
- `synthetic/...`: a synthetic set; at n{N} its first N images. `/f-{filter}` is that set filtered
  (synthscale.quality.filtering): the first images that pass, in index order, so nested N holds too.
  Guidance is written as `fmt_guidance` writes it (2.0 -> `g2`, 1.5 -> `g1.5`).
- `mix/real{R}/synthetic/...` (classifier arm, `mix.real_n`): the first R real images (`realall`:
  all of them) plus, at n{N}, the first N images of the synthetic set: N counts synthetic images only.
- `mixed/...` (CLIP arm, `clip.mixed`): the synthetic set mixed with real pairs, N pairs in all, a
  `clip.mix_real_fraction` share of them real. It is a different mixture from `mix/` (the real count
  is a share of N, not an axis of its own), so it keeps its own word; both parse through
  `parse_source`, as kinds "mix" and "mixed".
"""

from __future__ import annotations

from dataclasses import dataclass, replace

SYNTHETIC_REGEX = r"synthetic/[^/]+/g[^/]+/[^/]+(?:/f-[^/]+)?"
# a mixed source: real{R} in front of any synthetic source name
MIX_PREFIX_REGEX = r"mix/real(?:\d+|all)/"
# the classifier arm's sources
SOURCE_REGEX = rf"{MIX_PREFIX_REGEX}(?:real|{SYNTHETIC_REGEX})|real|{SYNTHETIC_REGEX}"
# the CLIP arm's sources
CLIP_SOURCE_REGEX = r"real|(synthetic|mixed)/[^/]+/g[^/]+/[^/]+"


def fmt_guidance(g: float) -> str:
    """Guidance as it appears in paths: 2 and 2.0 both give "2", 1.5 gives "1.5"."""
    return f"{float(g):g}"


def guidance_part(g: float | str) -> str:
    """Guidance in a path: a number as fmt_guidance writes it, a string (a Snakemake wildcard) as it is."""
    return g if isinstance(g, str) else fmt_guidance(g)


SYNTHETIC_PREFIX = "synthetic/"


def set_name(generator: str, guidance: float | str, strategy: str, filter: str | None = None) -> str:
    """A synthetic set's name less its `synthetic/`: `{generator}/g{guidance}/{strategy}[/f-{filter}]`,
    the folders Plan keeps the set's files in. Guidance as `guidance_part` writes it, so Snakemake
    wildcards pass through; `parse_source(SYNTHETIC_PREFIX + name)` reads it back."""
    base = f"{generator}/g{guidance_part(guidance)}/{strategy}"
    return base if filter in (None, "none") else f"{base}/f-{filter}"


def synthetic_source(generator: str, guidance: float, strategy: str, filter: str | None = None) -> str:
    return SYNTHETIC_PREFIX + set_name(generator, fmt_guidance(guidance), strategy, filter)


def mix_source(real_n: int | str, synthetic: str) -> str:
    """The name of a classifier's mixed source: `mix/real{R}/` in front of the synthetic source's name."""
    return f"mix/real{real_n}/{synthetic}"


def clip_mixed_source(synthetic: str) -> str:
    """`synthetic/...` -> `mixed/...`: the same synthetic set mixed with real pairs (clip.mix_real_fraction)."""
    if not synthetic.startswith("synthetic/"):
        raise ValueError(f"not a synthetic source: {synthetic!r}")
    return "mixed/" + synthetic[len("synthetic/"):]


@dataclass(frozen=True)
class Source:
    kind: str  # "real", "synthetic", "mix" (classifiers) or "mixed" (CLIPs)
    generator: str | None = None
    guidance: float | str | None = None  # a str only as the wildcard "{guidance}" (SET_WILDCARDS)
    strategy: str | None = None
    filter: str | None = None  # a filter_specs name; None for the unfiltered set
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
        if self.kind == "mixed":
            return clip_mixed_source(self.synthetic.name)
        return synthetic_source(self.generator, self.guidance, self.strategy, self.filter)

    @property
    def unfiltered(self) -> "Source":
        return Source(self.kind, self.generator, self.guidance, self.strategy, None, self.real_n)


# a synthetic set and its filtered set as Snakemake wildcards: rules pass them where Plan takes a Source
SET_WILDCARDS = Source("synthetic", "{generator}", "{guidance}", "{strategy}")
FILTERED_WILDCARDS = replace(SET_WILDCARDS, filter="{filter}")


def parse_source(source: str) -> Source:
    """The Source a name stands for, either arm's (the grammar above); ValueError if it is none."""
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
    if source.startswith("mixed/"):
        syn = parse_source("synthetic/" + source[len("mixed/") :])
        if syn.filter is not None:
            raise ValueError(f"a CLIP's mixed source takes an unfiltered set: {source!r}")
        return replace(syn, kind="mixed")
    parts = source.split("/")
    filt = None
    if len(parts) == 5 and parts[4].startswith("f-") and len(parts[4]) > 2:
        filt, parts = parts[4][2:], parts[:4]
    if len(parts) != 4 or parts[0] != "synthetic" or not parts[2].startswith("g"):
        raise ValueError(f"not a source name: {source!r}")
    return Source("synthetic", parts[1], float(parts[2][1:]), parts[3], filt)


def synthetic_name(source: str) -> str:
    """The name of the synthetic set in a source, as the source spells it: a mixed source's synthetic
    part (`mix/real{R}/synthetic/...` or `mixed/...` -> `synthetic/...`); a synthetic source is its own."""
    kind = parse_source(source).kind
    if kind == "real":
        raise ValueError("the real source has no synthetic set")
    if kind == "mix":
        return source.split("/", 2)[2]
    if kind == "mixed":
        return "synthetic/" + source[len("mixed/") :]
    return source


def train_counts(source: str, n_label: str, n_real_train: int) -> tuple[int, int]:
    """(real images, synthetic images) a classifier trained on; `all` real is the real split's size."""
    src = parse_source(source)
    if src.kind == "real":
        return (n_real_train if n_label == "all" else int(n_label)), 0
    if src.kind == "synthetic":
        return 0, int(n_label)
    if src.kind != "mix":
        raise ValueError(f"not a classifier's source: {source!r}")
    return (n_real_train if src.real_n == "all" else int(src.real_n)), int(n_label)
