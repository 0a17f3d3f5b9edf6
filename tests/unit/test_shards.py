"""Shard round trip with metadata, byte-identical rewrites, atomic writes."""
import hashlib

import numpy as np
import pytest

from synthscale.io import atomic_path
from synthscale.data.shards import load_arrays, write_shard


def _records(n):
    return [
        {"key": f"{i:08d}", "label": i % 3, "prompt": f"p{i}", "seed": 100 + i, "guidance": 2.0,
         "steps": 20, "generator": "g"}
        for i in range(n)
    ]


def test_round_trip_keeps_pixels_and_metadata(tmp_path, rng):
    images = rng.integers(0, 256, size=(7, 16, 16, 3), dtype=np.uint8)
    write_shard(tmp_path / "s.tar", images, _records(7))
    got, labels, recs = load_arrays([tmp_path / "s.tar"], mode="RGB")
    np.testing.assert_array_equal(got, images)
    assert labels.tolist() == [i % 3 for i in range(7)]
    assert recs == _records(7)


def test_grey_round_trip_and_limit(tmp_path, rng):
    images = rng.integers(0, 256, size=(5, 8, 8, 1), dtype=np.uint8)
    write_shard(tmp_path / "g.tar", images, _records(5))
    got, _, _ = load_arrays([tmp_path / "g.tar"], mode="L", limit=3)
    np.testing.assert_array_equal(got, images[:3])
    with pytest.raises(ValueError, match="only 5"):
        load_arrays([tmp_path / "g.tar"], mode="L", limit=6)


def test_rewrite_is_byte_identical(tmp_path, rng):
    images = rng.integers(0, 256, size=(4, 16, 16, 3), dtype=np.uint8)
    digests = []
    for name in ("a.tar", "b.tar"):
        write_shard(tmp_path / name, images, _records(4))
        digests.append(hashlib.sha256((tmp_path / name).read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_killed_write_leaves_no_target(tmp_path):
    target = tmp_path / "out.tar"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_shard_writer_streams_numbered_shards(tmp_path, rng):
    from synthscale.data.shards import ShardWriter, encode_image, shard_paths
    from synthscale.study.plan import shard_name

    images = rng.integers(0, 256, size=(10, 8, 8, 3), dtype=np.uint8)
    with ShardWriter(tmp_path / "w", 4, "webp", 90) as w:
        for i, im in enumerate(images):
            # arrays and already-encoded bytes both pass
            w.write(encode_image(im, "webp", 90) if i % 2 else im, {"key": f"{i:08d}", "label": i % 3})
    assert w.names == [shard_name(k) for k in range(3)] and w.count == 10
    got, labels, _ = load_arrays(shard_paths(tmp_path / "w", 3))
    assert got.shape == images.shape and labels.tolist() == [i % 3 for i in range(10)]
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path / "x", 4) as w:
            for i, im in enumerate(images[:6]):
                w.write(im, {"key": f"{i:08d}", "label": 0})
            raise RuntimeError("killed")
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == [shard_name(0)]  # no partial last shard
