"""Seeds, prompts and nesting of synthetic sets (DESIGN.md invariants 1 and 2)."""
import pytest

from synthscale.generation.generate import image_spec, shard_specs
from synthscale.study.plan import shards_for

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


def test_images_are_stored_at_the_storage_size_as_a_downscale_of_the_sampled_ones(tmp_path):
    """Sample at the model's size, store smaller (Azizi's base: 512 px sampled, 256 px stored): the stored
    image is the sampled one downscaled with antialiasing (PIL's area-weighted bilinear as the
    reference), and each record names both sizes."""
    import numpy as np
    import torch
    from PIL import Image

    from synthscale.generation.generate import generate_images, generate_shard
    from synthscale.generation.pipelines import load_generator
    from synthscale.data.shards import load_arrays
    from helpers.tiny_pipelines import build_sd

    torch.set_num_threads(1)
    pipe = load_generator(build_sd(tmp_path / "sd"))
    names = ["zero", "one", "two"]
    prompts = [[f"a photo of {w}"] for w in names]
    kw = dict(guidance=2.0, steps=2, sampler="ddim", batch_size=4, generator_name="g", class_names=names,
              progress=False)
    recs = generate_shard(pipe, tmp_path / "s.tar", 0, 4, prompts, 3, size=32,
                          storage={"size": 8, "format": "png"}, **kw)
    stored, _, _ = load_arrays([tmp_path / "s.tar"])
    sampled = np.stack(generate_images(pipe, shard_specs(0, 4, prompts, 3), 2.0, 2, 4, height=32, width=32))
    assert sampled.shape == (4, 32, 32, 3) and stored.shape == (4, 8, 8, 3)
    reference = np.stack([np.asarray(Image.fromarray(im).resize((8, 8), Image.BILINEAR)) for im in sampled])
    diff = np.abs(stored.astype(int) - reference.astype(int))
    # the device resizes the float image before rounding, PIL the rounded one: a level or two apart
    assert diff.max() <= 3 and diff.mean() < 0.75, (diff.max(), diff.mean())
    assert np.abs(sampled[:, ::4, ::4].astype(int) - stored.astype(int)).mean() > 4 * diff.mean(), \
        "the images vary within 4 px, so a plain subsample would not pass as the downscale"
    assert all((r["height"], r["width"], r["sample_height"], r["sample_width"]) == (8, 8, 32, 32) for r in recs)


def _fingerprint(tmp_path, prompts="a\n", guidance="2.0", spec=None, source="org/hub-model"):
    from synthscale.generation.generate import block_fingerprint

    (tmp_path / "p.jsonl").write_text(prompts)
    spec = spec or {"name": "g", "dtype": "float32", "source": source}
    return block_fingerprint(spec, {"steps": 20, "seed": 0}, guidance, tmp_path / "p.jsonl", "cpu", source)


def test_a_finished_shard_is_reused_only_under_the_same_prompts_guidance_and_generator(tmp_path):
    """The stamp a killed job's finished shards carry (block_fingerprint) is the same for the same
    settings and differs when the prompts file's content, the guidance, the generator entry or a local
    source folder's modification time differ: a rerun then makes the shard anew."""
    import os

    same = _fingerprint(tmp_path)
    assert _fingerprint(tmp_path) == same
    assert _fingerprint(tmp_path, prompts="b\n") != same
    assert _fingerprint(tmp_path, guidance="4.0") != same
    assert _fingerprint(tmp_path, spec={"name": "g", "dtype": "float16", "source": "org/hub-model"}) != same
    assert same["source_mtime"] is None  # a Hub id: no file to date
    folder = tmp_path / "gen"
    folder.mkdir()
    os.utime(folder, (1_000_000, 1_000_000))
    local = _fingerprint(tmp_path, source=str(folder))
    assert local["source_mtime"] == 1_000_000
    os.utime(folder, (2_000_000, 2_000_000))  # retrained: a newer folder
    assert _fingerprint(tmp_path, source=str(folder)) != local


def test_a_generation_job_loads_its_own_folder_and_a_pretrained_generator_its_source():
    """generator_source over the folders Plan.generator_inputs gives a generate_block job: a LoRA made
    here lists its own folder, then its base's, and loads its own (the base comes through its
    synthscale.json); a pretrained generator lists none and loads its config source."""
    from synthscale.generation.pipelines import generator_source

    spec = {"name": "lora", "source": "should-not-load"}
    assert generator_source(["res/generators/lora", "res/generators/base"], spec) == "res/generators/lora"
    assert generator_source("res/generators/own", spec) == "res/generators/own"  # one input: a str
    assert generator_source([], {"name": "hub", "source": "org/model"}) == "org/model"
