"""The source-name grammar (`synthscale.study.sources`): one parser for both arms' names."""

import re

import pytest

from synthscale.study.sources import (
    CLIP_SOURCE_REGEX,
    SOURCE_REGEX,
    Source,
    parse_source,
    synthetic_name,
)

NAMES = {
    "real": Source("real"),
    "synthetic/gen/g2/classname": Source("synthetic", "gen", 2.0, "classname"),
    "synthetic/gen/g1.5/classname/f-conf": Source("synthetic", "gen", 1.5, "classname", "conf"),
    "mix/real30/synthetic/gen/g2/classname": Source("mix", "gen", 2.0, "classname", real_n="30"),
    "mix/realall/synthetic/gen/g2/classname/f-conf": Source("mix", "gen", 2.0, "classname", "conf", "all"),
    "mixed/gen/g2/classname": Source("mixed", "gen", 2.0, "classname"),
}


@pytest.mark.parametrize("name", NAMES)
def test_every_name_parses_and_builds_back(name):
    src = parse_source(name)
    assert src == NAMES[name] and src.name == name
    if src.kind != "real":
        assert synthetic_name(name) == src.synthetic.name


def test_each_arm_matches_its_own_forms():
    classifier = {n for n in NAMES if re.fullmatch(SOURCE_REGEX, n)}
    clip = {n for n in NAMES if re.fullmatch(CLIP_SOURCE_REGEX, n)}
    assert classifier == set(NAMES) - {"mixed/gen/g2/classname"}
    assert clip == {"real", "synthetic/gen/g2/classname", "mixed/gen/g2/classname"}


@pytest.mark.parametrize("bad", ["mix/real030/synthetic/gen/g2/c", "mix/real30/real", "mixed/gen/g2/c/f-conf",
                                 "synthetic/gen/2/c", "fake"])
def test_names_outside_the_grammar_are_refused(bad):
    with pytest.raises(ValueError):
        parse_source(bad)
