"""Seeds, prompts and nesting of synthetic sets (DESIGN.md invariants 1 and 2)."""
import pytest

from synthscale.generate import image_spec, shard_specs
from synthscale.shards import shards_for

PROMPTS = [[f"c{c} p{j}" for j in range(5)] for c in range(10)]


def test_class_is_index_mod_classes():
    assert [image_spec(i, PROMPTS, 0).label for i in range(25)] == [i % 10 for i in range(25)]


def test_spec_depends_only_on_index_and_seed():
    a = [image_spec(i, PROMPTS, 3) for i in range(50)]
    b = [image_spec(i, PROMPTS, 3) for i in range(50)]
    assert a == b
    c = [image_spec(i, PROMPTS, 4) for i in range(50)]
    assert [s.seed for s in a] != [s.seed for s in c]
    assert len({s.seed for s in a}) == 50, "seeds must differ between images"


def test_prompt_comes_from_its_class():
    for i in range(100):
        s = image_spec(i, PROMPTS, 0)
        assert s.prompt in PROMPTS[s.label]
    used = {image_spec(i, PROMPTS, 0).prompt for i in range(0, 500, 10)}
    assert len(used) > 1, "a strategy with several prompts per class must use several"


def test_shards_nest_as_n_grows():
    small = shard_specs(0, 20, PROMPTS, 1) + shard_specs(1, 20, PROMPTS, 1)
    assert small == [image_spec(i, PROMPTS, 1) for i in range(40)]
    assert [shards_for(n, 20) for n in (1, 20, 21, 40, 41)] == [1, 1, 2, 2, 3]


@pytest.mark.parametrize("n,s", [(0, 10), (5, 0)])
def test_shards_for_rejects_bad_sizes(n, s):
    with pytest.raises(ValueError):
        shards_for(n, s)
