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
    from synthscale.data.shards import ShardWriter, encode_image
    from synthscale.data.shards import shard_name

    images = rng.integers(0, 256, size=(10, 8, 8, 3), dtype=np.uint8)
    with ShardWriter(tmp_path / "w", 4, "webp", 90) as w:
        for i, im in enumerate(images):
            # arrays and already-encoded bytes both pass
            w.write(encode_image(im, "webp", 90) if i % 2 else im, {"key": f"{i:08d}", "label": i % 3})
    assert w.names == [shard_name(k) for k in range(3)] and w.count == 10
    got, labels, _ = load_arrays([tmp_path / "w" / shard_name(k) for k in range(3)])
    assert got.shape == images.shape and labels.tolist() == [i % 3 for i in range(10)]
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path / "x", 4) as w:
            for i, im in enumerate(images[:6]):
                w.write(im, {"key": f"{i:08d}", "label": 0})
            raise RuntimeError("killed")
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == [shard_name(0)]  # no partial last shard


# --- the one tar reader and the one writer ---------------------------------------------------------


def _mixed_shard(path, n=7):
    """A shard of n samples whose records carry a prompt every other one (so some samples have a .txt)."""
    images = [f"image {i}".encode() for i in range(n)]  # already encoded, as far as the writer knows
    recs = [{"key": f"{i:08d}", "label": i % 3, **({"prompt": f"p{i}"} if i % 2 else {})} for i in range(n)]
    write_shard(path, images, recs)
    return images, recs


def _tarfile_samples(path):
    """The reference grouping, by the standard library: (key, {ext: bytes}) per run of one key."""
    import tarfile

    out = []
    with tarfile.open(path) as tar:
        for m in tar:
            key, _, ext = m.name.partition(".")
            if not out or out[-1][0] != key:
                out.append((key, {}))
            out[-1][1][ext] = tar.extractfile(m).read()
    return out


def test_tar_samples_agrees_with_tarfile_and_webdataset_and_resumes_with_skip(tmp_path):
    """The one reader yields what the standard library and WebDataset (the readers it replaced) find in
    a shard of several samples, in order; `skip` starts at the right sample; `wanted` reads a subset."""
    import io
    import tarfile

    import webdataset as wds

    from synthscale.data.shards import tar_samples

    _mixed_shard(tmp_path / "s.tar")
    got = list(tar_samples(tmp_path / "s.tar"))
    assert [k for k, _ in got] == [f"{i:08d}" for i in range(7)]
    assert got == _tarfile_samples(tmp_path / "s.tar")
    ds = wds.DataPipeline(wds.SimpleShardList([str(tmp_path / "s.tar")]), wds.tarfile_to_samples())
    assert [(s["__key__"], {e: v for e, v in s.items() if not e.startswith("__")}) for s in ds] == got
    assert sorted(got[1][1]) == ["cls", "json", "png", "txt"] and sorted(got[0][1]) == ["cls", "json", "png"]
    for skip in (1, 3, 6, 7, 9):
        assert list(tar_samples(tmp_path / "s.tar", skip)) == got[skip:], skip
    only_cls = list(tar_samples(tmp_path / "s.tar", 2, wanted=lambda name: name.endswith(".cls")))
    assert only_cls == [(k, {"cls": f["cls"]}) for k, f in got[2:]]
    with tarfile.open(tmp_path / "upper.tar", "w", format=tarfile.USTAR_FORMAT) as t:  # as WebDataset: .PNG is png
        for name in ("00000000.PNG", "00000000.cls", "00000001.Seg.Png"):
            t.addfile(tarfile.TarInfo(name), io.BytesIO(b""))
    ds = wds.DataPipeline(wds.SimpleShardList([str(tmp_path / "upper.tar")]), wds.tarfile_to_samples())
    assert list(tar_samples(tmp_path / "upper.tar")) == [
        (s["__key__"], {e: v for e, v in s.items() if not e.startswith("__")}) for s in ds
    ] == [("00000000", {"png": b"", "cls": b""}), ("00000001", {"seg.png": b""})]


def test_every_reader_is_the_one_reader(tmp_path):
    """The stages' readers (decoded images, raw bytes, the training stream's, CLIP pairs', webdataset
    pipelines') all give the samples `tar_samples` gives, in its order, across shards."""
    import json

    import webdataset as wds

    from synthscale.clip.pairs import iter_captioned
    from synthscale.data.loader import first_index, part_size, read_shard, shard_count
    from synthscale.data.shards import encode_image, iter_shards, tar_samples, wds_samples
    from synthscale.quality.filtering import iter_raw

    rng = np.random.default_rng(0)
    paths = [tmp_path / "a.tar", tmp_path / "b.tar"]
    images = rng.integers(0, 256, size=(9, 8, 8, 3), dtype=np.uint8)
    recs = [{"key": f"{i:08d}", "label": i % 3, "prompt": f"p{i}"} for i in range(9)]
    write_shard(paths[0], images[:5], recs[:5])
    write_shard(paths[1], images[5:], recs[5:])
    samples = [s for p in paths for s in tar_samples(p)]
    raw = [f["png"] for _, f in samples]
    assert raw == [encode_image(im) for im in images]
    got = list(iter_shards(paths, limit=7))
    assert [r for _, r in got] == recs[:7]
    np.testing.assert_array_equal(np.stack([im for im, _ in got]), images[:7])
    assert list(iter_raw(paths)) == [(b, "png", r) for b, r in zip(raw, recs)]
    assert [s for p in paths for s in read_shard(p, 2)] == [(b, i % 3, i) for i, b in enumerate(raw) if i % 5 >= 2]
    assert [(first_index(p), shard_count(p)) for p in paths] == [(0, 5), (5, 4)] and part_size({"shards": paths}) == 9
    pairs = list(iter_captioned(paths, 9, "synthetic", captions="own"))
    assert [(e, b, y, t) for e, b, y, t, _ in pairs] == [("png", b, i % 3, f"p{i}") for i, b in enumerate(raw)]
    stage = list(wds_samples({"url": str(p)} for p in paths))
    assert [(s["__key__"], {e: v for e, v in s.items() if not e.startswith("__")}) for s in stage] == samples
    reference = wds.DataPipeline(wds.SimpleShardList([str(p) for p in paths]), wds.tarfile_to_samples())
    assert [{**s, "json": json.loads(s["json"])} for s in stage] == [{**s, "json": json.loads(s["json"])} for s in reference]


def test_tar_members_follows_long_names_and_refuses_what_it_cannot_read(tmp_path):
    """GNU long names and ustar prefixes give the whole name, other member types are passed over; a pax
    tar and a truncated one are errors, not silent short reads."""
    import io
    import tarfile

    from synthscale.data.shards import member_key, tar_members

    long = "d/" + "x" * 120 + "/00000003.cls"

    def tar(path, fmt, names):
        with tarfile.open(path, "w", format=fmt) as t:
            info = tarfile.TarInfo("dir")
            info.type = tarfile.DIRTYPE
            t.addfile(info)
            for n in names:
                m = tarfile.TarInfo(n)
                m.size = len(n)
                t.addfile(m, io.BytesIO(n.encode()))

    tar(tmp_path / "gnu.tar", tarfile.GNU_FORMAT, [long, "00000004.png"])
    got = [(name, read()) for name, read in tar_members(tmp_path / "gnu.tar")]
    assert got == [(long, long.encode()), ("00000004.png", b"00000004.png")]
    assert member_key(long) == "00000003"
    prefixed = "p" * 90 + "/" + "q" * 20 + "/00000005.json"  # over 100 characters: ustar splits it
    tar(tmp_path / "ustar.tar", tarfile.USTAR_FORMAT, [prefixed])
    assert [name for name, _ in tar_members(tmp_path / "ustar.tar")] == [prefixed]
    tar(tmp_path / "pax.tar", tarfile.PAX_FORMAT, [long])
    with pytest.raises(ValueError, match="pax"):
        list(tar_members(tmp_path / "pax.tar"))
    _mixed_shard(tmp_path / "s.tar")
    data = (tmp_path / "s.tar").read_bytes()
    for cut in (512 * 7 + 3, 512 * 6 + 100):  # in a member's data (7 bytes), in a header
        (tmp_path / "cut.tar").write_bytes(data[:cut])
        with pytest.raises(ValueError, match="truncated"):
            list(tar_members(tmp_path / "cut.tar"))


def test_caption_shards_round_trip_through_the_writer(tmp_path):
    """CLIP caption shards come from `ShardWriter`: per sample the image (its own extension), .cls, .txt
    and .json, mode 0644, mtime 0, no owner; the same bytes as `write_shard` of the same records; read
    back by the one reader as written."""
    import json
    import tarfile

    from synthscale.clip.pairs import write_caption_shards
    from synthscale.data.shards import ShardWriter, tar_samples

    images, recs = _mixed_shard(tmp_path / "src.tar", 7)
    pools = [[f"a {c}", f"the {c}"] for c in ("zero", "one", "two")]
    out, n = write_caption_shards(tmp_path / "pairs", [("synthetic", [tmp_path / "src.tar"], 7)], pools, 1, 3)
    assert n == 7 and [p.name for p in out] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert sorted(p.name for p in (tmp_path / "pairs").iterdir()) == [p.name for p in out]  # no leftovers
    back = [s for p in out for s in tar_samples(p)]
    assert [k for k, _ in back] == [f"{i:09d}" for i in range(7)]
    for i, (key, files) in enumerate(back):
        meta = json.loads(files["json"])
        assert files["png"] == images[i] and int(files["cls"]) == i % 3 == meta["label"]
        assert files["txt"].decode() == meta["caption"] in pools[i % 3]
        assert meta["record"] == {**recs[i], **({"own_text": f"p{i}"} if i % 2 else {})}
        assert meta["key"] == key and meta["origin"] == "synthetic"
    with tarfile.open(out[0]) as t:
        members = t.getmembers()
    assert [m.name for m in members[:4]] == ["000000000.png", "000000000.cls", "000000000.txt", "000000000.json"]
    assert {(m.mtime, m.mode, m.uname, m.gname, m.type) for m in members} == {(0, 0o644, "", "", tarfile.REGTYPE)}
    metas = [json.loads(f["json"]) for _, f in back]
    write_shard(tmp_path / "same.tar", [f["png"] for _, f in back[:3]], metas[:3])
    assert (tmp_path / "same.tar").read_bytes() == out[0].read_bytes()
    with ShardWriter(tmp_path / "ext", 2) as w:  # an encoded image keeps the extension given with it
        w.write(b"jpeg bytes", {"key": "00000000", "label": 1}, ext="jpg")
        w.write(b"webp bytes", {"key": "00000001", "label": 2}, ext="webp")
    assert [(k, sorted(f)) for k, f in tar_samples(tmp_path / "ext" / w.names[0])] == [
        ("00000000", ["cls", "jpg", "json"]), ("00000001", ["cls", "json", "webp"])]
