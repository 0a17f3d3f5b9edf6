"""WordNet noun synsets by ImageNet id (`n01440764`), offline: name, gloss and hypernym of a class.

ImageNet's class ids are WordNet 3.0 noun offsets: `n` + the synset's byte offset in WordNet's
`data.noun`. The file is read directly (seek to the offset, parse one line), so any copy of the
WordNet 3.0 database works: Debian's `wordnet-base` package (`apt-get install wordnet-base`,
files in /usr/share/wordnet) or nltk's corpus (`python -m nltk.downloader wordnet`, files in
~/nltk_data/corpora/wordnet). `SYNTHSCALE_WORDNET` names another folder holding `data.noun`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

WNID = re.compile(r"^n\d{8}$")

INSTALL_HINT = (
    "install WordNet 3.0 offline: `apt-get install wordnet-base` (Debian/Ubuntu, files in "
    "/usr/share/wordnet), or `python -m nltk.downloader wordnet` (nltk's copy), or set "
    "SYNTHSCALE_WORDNET to a folder holding WordNet's data.noun"
)


@dataclass(frozen=True)
class Synset:
    wnid: str
    lemmas: tuple[str, ...]  # lemma names with spaces, in WordNet's order
    gloss: str  # the definition, without the example sentences
    hypernyms: tuple[str, ...]  # wnids of the direct (or instance) hypernyms

    @property
    def name(self) -> str:
        return self.lemmas[0]


def is_wnid(text: str) -> bool:
    return bool(WNID.match(str(text)))


def candidate_dirs() -> list[Path]:
    dirs = [os.environ.get("SYNTHSCALE_WORDNET", ""), "/usr/share/wordnet"]
    if os.environ.get("WNHOME"):
        dirs.append(os.path.join(os.environ["WNHOME"], "dict"))
    for base in [*os.environ.get("NLTK_DATA", "").split(os.pathsep), "~/nltk_data",
                 "/usr/share/nltk_data", "/usr/local/share/nltk_data"]:
        if base:
            dirs.append(os.path.join(base, "corpora", "wordnet"))
    return [Path(d).expanduser() for d in dirs if d]


def find_wordnet() -> Path:
    """The first folder holding WordNet's data.noun; a FileNotFoundError that says how to install one."""
    tried = candidate_dirs()
    for d in tried:
        if (d / "data.noun").is_file():
            return d
    raise FileNotFoundError(
        f"WordNet data not found (looked for data.noun in {', '.join(map(str, tried))}); {INSTALL_HINT}"
    )


def _parse(line: str, wnid: str) -> Synset:
    fields, _, gloss = line.partition(" | ")
    tok = fields.split()
    # offset lex_filenum ss_type w_cnt(hex) [word lex_id]*w_cnt p_cnt [symbol offset pos source/target]*
    n_words = int(tok[3], 16)
    words = tok[4 : 4 + 2 * n_words : 2]
    p = 4 + 2 * n_words
    n_ptr = int(tok[p])
    hypernyms = []
    for k in range(n_ptr):
        sym, off, pos = tok[p + 1 + 4 * k : p + 4 + 4 * k]
        if sym in ("@", "@i") and pos == "n":
            hypernyms.append(f"n{off}")
    # a gloss holds the definition, then quoted examples after '; "'
    definition = re.split(r';\s*"', gloss.strip())[0].strip()
    lemmas = tuple(re.sub(r"\(.*\)$", "", w).replace("_", " ") for w in words)
    return Synset(wnid, lemmas, definition, tuple(hypernyms))


@lru_cache(maxsize=None)
def _data_noun(folder: str) -> bytes:
    return (Path(folder) / "data.noun").read_bytes()


def synset(wnid: str, folder: str | os.PathLike | None = None) -> Synset:
    """The noun synset of an ImageNet-style WordNet id, read from WordNet 3.0's data.noun."""
    if not is_wnid(wnid):
        raise ValueError(f"{wnid!r} is not a WordNet noun id (n + 8 digits, e.g. n01440764)")
    data = _data_noun(str(Path(folder) if folder else find_wordnet()))
    offset = int(wnid[1:])
    end = data.find(b"\n", offset)
    line = data[offset : end if end >= 0 else len(data)].decode("utf-8", errors="replace")
    if offset >= len(data) or not line.startswith(wnid[1:] + " "):
        raise KeyError(f"{wnid} is not a synset offset in WordNet 3.0's data.noun")
    return _parse(line, wnid)


def class_row(wnid: str, folder: str | os.PathLike | None = None) -> dict[str, str]:
    """name, description (the gloss) and hypernym (its first hypernym's first lemma) of one class."""
    s = synset(wnid, folder)
    hyper = synset(s.hypernyms[0], folder).name if s.hypernyms else ""
    return {"name": s.name, "description": s.gloss, "hypernym": hyper}


# open_clip's curated ImageNet-1k names (OpenAI's, as Fan et al. use them) repeat two names; these two
# classes take their WordNet lemma instead, so every class keeps a distinct name
IMAGENET_NAME_FIXES = {"n04008634": "projectile", "n04355933": "sunglass"}


def package_dir(name: str) -> Path:
    """An installed package's folder, found without importing the package (nor what its `__init__` imports)."""
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the {name} package is not installed")
    return Path(list(spec.submodule_search_locations)[0])


@lru_cache(maxsize=1)
def imagenet1k_names() -> dict[str, str]:
    """ImageNet-1k's class names by wnid: open_clip's curated `IMAGENET_CLASSNAMES`, in the order of the
    1000 wnids sorted (timm's `data/_info/imagenet_synsets.txt`), with IMAGENET_NAME_FIXES.

    Both lists are read from the installed packages' files, offline and without importing torch."""
    import ast

    wnids = (package_dir("timm") / "data" / "_info" / "imagenet_synsets.txt").read_text().split()
    tree = ast.parse((package_dir("open_clip") / "zero_shot_metadata.py").read_text())
    names = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "IMAGENET_CLASSNAMES" for t in node.targets)
    )
    if len(wnids) != 1000 or wnids != sorted(wnids) or len(names) != 1000:
        raise ValueError("timm's imagenet_synsets.txt or open_clip's IMAGENET_CLASSNAMES is not ImageNet-1k's 1000")
    return {w: IMAGENET_NAME_FIXES.get(w, n) for w, n in zip(wnids, names)}
