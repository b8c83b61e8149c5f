"""slidegrad.results: a run's stored results, one file per job (tiles per chunk, masks per chunk and
method, top_k's tile scores), written and read back; ``load`` over a results folder built here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import slidegrad as sg
from slidegrad import results
from slidegrad.errors import InputError
from slidegrad.layout import Layout
from slidegrad.tables import Tile, write_tile_table

LABELS = ["negative", "positive"]
GEOMETRY = {"tile_px": 8, "tile_um": 16, "mpp": 0.5, "level": 1, "extract_px": 32}
JOB = {
    "method": "vanilla", "method_name": "vanilla", "smooth": False, "params": {}, "backend": "torch",
    "outcome_labels": LABELS, "model_sha256": "ab" * 32, "engine": "native", "device": "cpu",
    "gradcam_layer": None, "prefix_tokens": None, "stain_normalizer": None, "slidegrad_version": sg.__version__,
}  # fmt: skip


def one_line(call, *args, match: str, **kwargs) -> str:
    """``call`` raises one InputError line matching ``match``; the line."""
    with pytest.raises(InputError, match=match) as err:
        call(*args, **kwargs)
    assert "\n" not in str(err.value), str(err.value)
    return str(err.value)


def record(i: int, p: float) -> dict:
    """A mask job's per-tile record (tile ``i``, p(positive) ``p``)."""
    return {
        "class_idx": int(p > 0.5), "class_label": LABELS[int(p > 0.5)], "probability": max(p, 1 - p),
        "probabilities": [1 - p, p], "completeness_error": None if i % 2 else 0.01 * i, "mask_mean": 0.1 * i,
        "mask_max": 1.0, "top10_mass": 0.2, **GEOMETRY,
    }  # fmt: skip


def mask_arrays(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(masks, attributions, raw)`` of ``n`` 8 × 8 tiles."""
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(n, 8, 8, 3)).astype(np.float32)
    attributions = np.abs(raw).sum(axis=-1)
    masks = attributions / attributions.max(axis=(1, 2), keepdims=True)
    return masks.astype(np.float32), attributions.astype(np.float32), raw


# -- tile chunks -------------------------------------------------------------------------------------
def test_tile_chunk_round_trip(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    path = tmp_path / "tiles" / "s1" / "chunk0000.npz"
    results.write_tile_chunk(path, ["x0_y0", "x32_y0", "x64_y32"], [0, 32, 64], [0, 0, 32], images)
    chunk = results.read_tile_chunk(path)
    assert chunk.names == ["x0_y0", "x32_y0", "x64_y32"]
    assert chunk.x.dtype == chunk.y.dtype == np.int64 and chunk.x.tolist() == [0, 32, 64] and chunk.y.tolist() == [0, 0, 32]
    assert chunk.images.dtype == np.uint8
    np.testing.assert_array_equal(chunk.images, images)
    assert results.read_tile_chunk(path, ["x0_y0", "x32_y0", "x64_y32"]).names == chunk.names
    assert [p.name for p in path.parent.iterdir()] == ["chunk0000.npz"]  # written atomically: no temporary left
    with np.load(path) as npz:
        assert sorted(npz.files) == ["images", "tile", "x", "y"]


def test_tile_chunk_of_other_tiles_than_the_table_is_one_line(tmp_path):
    path = tmp_path / "tiles" / "s1" / "chunk0000.npz"
    results.write_tile_chunk(path, ["x0_y0", "x32_y0"], [0, 32], [0, 0], np.zeros((2, 8, 8, 3), np.uint8))
    line = one_line(results.read_tile_chunk, path, ["x0_y0", "x64_y0"], match=r"^tile chunk '.*chunk0000\.npz': holds tiles ")
    assert "[x0_y0, x32_y0] (2)" in line and "the tile table says [x0_y0, x64_y0] (2)" in line
    assert line.endswith("delete the slide's tile table and rerun to tile it again")


@pytest.mark.parametrize(
    "images",
    [np.zeros((2, 8, 8, 3), np.float32), np.zeros((2, 8, 8), np.uint8), np.zeros((2, 8, 8, 4), np.uint8),
     np.zeros((3, 8, 8, 3), np.uint8)],
    ids=["float", "grey", "rgba", "three-for-two"],
)  # fmt: skip
def test_write_tile_chunk_refuses_what_is_not_uint8_rgb_tiles(tmp_path, images):
    one_line(
        results.write_tile_chunk, tmp_path / "c.npz", ["a", "b"], [0, 1], [0, 1], images,
        match=r"^tile chunk '.*c\.npz': expected 2 uint8",
    )  # fmt: skip
    assert not list(tmp_path.iterdir())


def test_tile_scores_round_trip(tmp_path):
    coords = [(0, 0), (32, 0), (0, 32)]
    probs = np.array([[0.1, 0.9], [0.8, 0.2], [0.5, 0.5]])
    path = Layout(str(tmp_path)).tile_scores("s1")
    results.write_tile_scores(path, coords, probs, LABELS, 32)
    scores = results.read_tile_scores(path)
    assert scores.x.tolist() == [0, 32, 0] and scores.y.tolist() == [0, 0, 32]
    assert scores.probabilities.dtype == np.float32
    np.testing.assert_array_equal(scores.probabilities, probs.astype(np.float32))
    assert scores.labels == LABELS and scores.extract_px == 32
    one_line(results.write_tile_scores, tmp_path / "bad.npz", coords, probs[:2], LABELS, 32, match=r"expected \(3, 2\) probabilities")


# -- mask chunks -------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw_shape", [None, (3, 8, 8, 3), (3, 8, 8)], ids=["no-raw", "raw-rgb", "raw-map"])
def test_mask_chunk_round_trip(tmp_path, raw_shape):
    masks, attributions, raw = mask_arrays(3)
    if raw_shape is not None:
        raw = raw if len(raw_shape) == 4 else raw[..., 0]
    names, records = ["x0_y0", "x32_y0", "x64_y32"], [record(i, p) for i, p in enumerate((0.9, 0.2, 0.6))]
    path = Layout(str(tmp_path)).mask_file("s1", "chunk0000", "vanilla")
    assert path == f"{tmp_path}/masks/s1/vanilla/chunk0000.npz"
    results.write_mask_chunk(path, names, [0, 32, 64], [0, 0, 32], masks, attributions, records, JOB,
                             raw=None if raw_shape is None else raw)  # fmt: skip

    chunk = results.read_mask_chunk(path, ("masks", "attributions", "raw"))
    assert chunk.path == Path(path) and chunk.names == names
    assert chunk.x.tolist() == [0, 32, 64] and chunk.y.tolist() == [0, 0, 32]
    assert chunk.masks.dtype == chunk.attributions.dtype == np.float32
    np.testing.assert_array_equal(chunk.masks, masks)
    np.testing.assert_array_equal(chunk.attributions, attributions)
    if raw_shape is None:
        assert chunk.raw is None
    else:
        assert chunk.raw.shape == raw_shape and chunk.raw.dtype == np.float32
        np.testing.assert_array_equal(chunk.raw, raw)
    # a record: the job's fields, the tile's own and its name
    assert chunk.records == [{**JOB, **r, "tile": n} for n, r in zip(names, records)]
    assert results.read_mask_records(path) == chunk.records

    only = results.read_mask_chunk(path)  # the default: masks only
    assert only.attributions is None and only.raw is None
    np.testing.assert_array_equal(only.masks, masks)
    none = results.read_mask_chunk(path, arrays=())
    assert none.masks is None and none.names == names and none.records == chunk.records
    with np.load(path) as npz:
        expected = {"masks", "attributions", "tile", "x", "y", "records", "job"} | ({"raw"} if raw_shape else set())
        assert set(npz.files) == expected
        assert json.loads(str(npz["job"])) == JOB
        assert [json.loads(line) for line in str(npz["records"]).split("\n")] == records  # a JSON object per line


def test_mask_chunk_rewrites_are_byte_identical(tmp_path):
    masks, attributions, raw = mask_arrays(2)
    args = (["a", "b"], [0, 1], [2, 3], masks, attributions, [record(0, 0.7), record(1, 0.1)], JOB)
    results.write_mask_chunk(tmp_path / "1.npz", *args, raw=raw)
    results.write_mask_chunk(tmp_path / "2.npz", *args, raw=raw)
    assert (tmp_path / "1.npz").read_bytes() == (tmp_path / "2.npz").read_bytes()
    results.write_tile_chunk(tmp_path / "t1.npz", ["a", "b"], [0, 1], [2, 3], (masks[..., None].repeat(3, -1) * 255).astype(np.uint8))
    results.write_tile_chunk(tmp_path / "t2.npz", ["a", "b"], [0, 1], [2, 3], (masks[..., None].repeat(3, -1) * 255).astype(np.uint8))
    assert (tmp_path / "t1.npz").read_bytes() == (tmp_path / "t2.npz").read_bytes()


def test_a_tile_record_field_wins_over_the_jobs(tmp_path):
    masks, attributions, _ = mask_arrays(1)
    results.write_mask_chunk(tmp_path / "m.npz", ["a"], [0], [0], masks, attributions, [{"device": "cuda:1"}], JOB)
    (only,) = results.read_mask_records(tmp_path / "m.npz")
    assert only["device"] == "cuda:1" and only["method"] == "vanilla" and only["tile"] == "a"


def test_an_empty_mask_chunk_reads_back_empty(tmp_path):
    empty = np.zeros((0, 8, 8), np.float32)
    results.write_mask_chunk(tmp_path / "m.npz", [], [], [], empty, empty, [], JOB)
    chunk = results.read_mask_chunk(tmp_path / "m.npz", ("masks", "attributions"))
    assert chunk.names == [] and chunk.records == [] and chunk.masks.shape == (0, 8, 8)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"masks": np.zeros((2, 8, 8, 1), np.float32)}, r"masks must be \(N, H, W\) for 2 tiles, got \(2, 8, 8, 1\)"),
        ({"attributions": np.zeros((3, 8, 8), np.float32)}, r"attributions must be \(N, H, W\) for 2 tiles"),
        ({"records": [{}]}, r"1 records for 2 tiles"),
        ({"x": [0]}, r"2 tile names for 1 x and 2 y"),
    ],
)
def test_write_mask_chunk_refuses_inconsistent_arrays(tmp_path, change, message):
    masks, attributions, _ = mask_arrays(2)
    args = {"names": ["a", "b"], "x": [0, 1], "y": [0, 1], "masks": masks, "attributions": attributions,
            "records": [{}, {}], "job": JOB, **change}  # fmt: skip
    one_line(results.write_mask_chunk, tmp_path / "m.npz", **args, match=message)
    assert not list(tmp_path.iterdir())


def test_read_mask_records_checks_keys_and_arrays_asked_for(tmp_path):
    masks, attributions, _ = mask_arrays(1)
    results.write_mask_chunk(tmp_path / "m.npz", ["a"], [0], [0], masks, attributions, [record(0, 0.3)], JOB)
    assert results.read_mask_records(tmp_path / "m.npz", ("class_label", "probability", "method"))[0]["class_label"] == "negative"
    one_line(
        results.read_mask_records, tmp_path / "m.npz", ("class_label", "nope", "gone"),
        match=r"^mask file '.*m\.npz': records miss key\(s\) nope, gone$",
    )  # fmt: skip
    one_line(results.read_mask_chunk, tmp_path / "m.npz", ("masks", "heat"), match=r"^results: unknown array\(s\) \['heat'\]")


# -- broken files ------------------------------------------------------------------------------------
def written_mask_file(root: Path) -> Path:
    masks, attributions, raw = mask_arrays(2)
    path = Path(Layout(str(root)).mask_file("s1", "chunk0000", "vanilla"))
    results.write_mask_chunk(path, ["a", "b"], [0, 1], [0, 1], masks, attributions, [record(0, 0.7), record(1, 0.2)], JOB, raw=raw)
    return path


@pytest.mark.parametrize("cut", [0, 10, 400, -22, -1], ids=["empty", "header", "data", "directory", "last-byte"])
def test_a_truncated_mask_file_is_one_line_naming_it_and_its_fix(tmp_path, cut):
    path = written_mask_file(tmp_path)
    path.write_bytes(path.read_bytes()[:cut])
    for call in (results.read_mask_chunk, results.read_mask_records):
        line = one_line(call, path, match=rf"^mask file '{path}' is truncated or corrupt \(")
        assert line.endswith("; it was written by rule masks; delete it and rerun to recompute it")


def member_data(path: Path, name: str) -> int:
    """Where the stored (compressed) data of the member ``name`` of the zip ``path`` starts."""
    import struct
    import zipfile

    with zipfile.ZipFile(path) as archive:
        offset = archive.getinfo(name).header_offset
    header = path.read_bytes()[offset : offset + 30]
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return offset + 30 + name_len + extra_len


def test_a_garbled_mask_file_is_one_line(tmp_path):
    path = written_mask_file(tmp_path)
    data = bytearray(path.read_bytes())
    at = member_data(path, "attributions.npy") + 200  # inside the stored attributions: the zip's CRC no longer matches
    data[at : at + 16] = b"\0" * 16
    path.write_bytes(bytes(data))
    assert results.read_mask_chunk(path).masks.shape == (2, 8, 8)  # what is intact reads
    one_line(results.read_mask_chunk, path, ("masks", "attributions"), match=rf"^mask file '{path}' is truncated or corrupt \(")


@pytest.mark.parametrize("where", ["crc", "deflate"])
def test_a_garbled_tile_chunk_is_one_line(tmp_path, where):
    """Tiles are zlib-compressed: garbled data fails the CRC check, or the inflater itself (zlib.error)."""
    tiles = tmp_path / "tiles" / "s1" / "chunk0000.npz"
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    results.write_tile_chunk(tiles, ["a", "b"], [0, 1], [0, 1], images)
    data = bytearray(tiles.read_bytes())
    at = member_data(tiles, "images.npy") + (1000 if where == "crc" else 0)
    data[at : at + 64] = bytes(64) if where == "crc" else b"\xff" * 64
    tiles.write_bytes(bytes(data))
    one_line(results.read_tile_chunk, tiles, match=rf"^tile chunk '{tiles}' is truncated or corrupt \(.*\); it was written by rule tiles; "
             rf"delete its folder '{tiles.parent}' and rerun to recompute it$")  # fmt: skip


def test_a_mask_file_with_a_missing_array_or_bad_records_is_one_line(tmp_path):
    path = written_mask_file(tmp_path)
    with np.load(path) as npz:
        arrays = dict(npz)
    np.savez(path, **{k: v for k, v in arrays.items() if k != "records"})
    one_line(results.read_mask_chunk, path, match=rf"^mask file '{path}': no array 'records'; was it written by this version\?$")
    np.savez(path, **{**arrays, "job": np.array("{not json")})
    one_line(results.read_mask_chunk, path, match=rf"^mask file '{path}' is truncated or corrupt \(")
    np.savez(path, **{**arrays, "records": np.array('{"class_idx": 1}')})  # one record for two tiles
    one_line(results.read_mask_chunk, path, match=rf"^mask file '{path}': its arrays disagree on the number of tiles$")
    np.savez(path, **{**arrays, "masks": arrays["masks"][:1]})
    one_line(results.read_mask_chunk, path, match=rf"^mask file '{path}': its arrays disagree on the number of tiles$")


def test_a_missing_file_is_one_line(tmp_path):
    path = Layout(str(tmp_path)).mask_file("s1", "chunk0000", "vanilla")
    one_line(results.read_mask_chunk, path, match=rf"^mask file '{path}': file not found \(did the job that writes it run\?\)$")
    path = Layout(str(tmp_path)).tile_chunk("s1", "chunk0000")
    one_line(results.read_tile_chunk, path, match=rf"^tile chunk '{path}': file not found \(did the job that writes it run\?\)$")
    one_line(results.read_tile_scores, tmp_path / "scores.npz", match=r"^tile scores '.*scores\.npz': file not found")


# -- load: a slide's results -------------------------------------------------------------------------
COORDS = [(0, 0), (32, 0), (64, 0), (0, 32), (32, 32)]
PROBS = [0.9, 0.2, 0.6, 0.4, 0.95]


@pytest.fixture()
def outdir(tmp_path) -> dict:
    """A results folder as the workflow writes it: a 5-tile table in 2 chunks (3 + 2), the tile chunks and
    two methods' mask files; masks and attributions known by tile."""
    layout = Layout(str(tmp_path / "results"))
    tiles = [Tile("s1", x, y) for x, y in COORDS]
    write_tile_table(layout.tile_table("s1"), tiles, 3, GEOMETRY)
    rng = np.random.default_rng(0)
    known = {}
    for chunk, at in (("chunk0000", [0, 1, 2]), ("chunk0001", [3, 4])):
        names = [tiles[i].name for i in at]
        xs, ys = [tiles[i].x for i in at], [tiles[i].y for i in at]
        results.write_tile_chunk(layout.tile_chunk("s1", chunk), names, xs, ys, rng.integers(0, 256, (len(at), 8, 8, 3), dtype=np.uint8))
        for method in ("vanilla", "gradcam"):
            masks, attributions, _ = mask_arrays(len(at), seed=len(known))
            for name, mask, attribution in zip(names, masks, attributions):
                known[method, name] = (mask, attribution)
            results.write_mask_chunk(
                layout.mask_file("s1", chunk, method), names, xs, ys, masks, attributions,
                [record(i, PROBS[i]) for i in at], {**JOB, "method": method},
            )  # fmt: skip
    return {"outdir": str(tmp_path / "results"), "layout": layout, "names": [t.name for t in tiles], "known": known}


def test_load_concatenates_a_slides_chunks_in_tile_table_order(outdir):
    loaded = results.load(outdir["outdir"], "s1", "gradcam", attributions=True)
    names = outdir["names"]
    assert loaded.masks.shape == (5, 8, 8) and loaded.masks.dtype == np.float32
    for i, name in enumerate(names):
        mask, attribution = outdir["known"]["gradcam", name]
        np.testing.assert_array_equal(loaded.masks[i], mask)
        np.testing.assert_array_equal(loaded.attributions[i], attribution)
    assert loaded.files == [Path(outdir["layout"].mask_file("s1", c, "gradcam")) for c in ("chunk0000", "chunk0001")]
    frame = loaded.tiles
    assert list(frame.columns) == [
        "tile", "x", "y", "chunk", "class_idx", "class_label", "probability", "p_negative", "p_positive", "mask_mean",
        "mask_max", "top10_mass", "positive_share", "completeness_error", "tile_px", "tile_um", "mpp", "level", "extract_px",
    ]  # fmt: skip
    assert frame["tile"].tolist() == names
    assert list(zip(frame["x"], frame["y"])) == COORDS
    assert frame["chunk"].tolist() == ["chunk0000"] * 3 + ["chunk0001"] * 2
    assert frame["class_idx"].tolist() == [int(p > 0.5) for p in PROBS]
    assert frame["class_label"].tolist() == [LABELS[int(p > 0.5)] for p in PROBS]
    assert frame["probability"].tolist() == pytest.approx([max(p, 1 - p) for p in PROBS])
    assert frame["p_positive"].tolist() == pytest.approx(PROBS)
    assert frame["p_negative"].tolist() == pytest.approx([1 - p for p in PROBS])
    assert frame["mask_mean"].tolist() == pytest.approx([0.1 * i for i in range(5)])
    assert frame["completeness_error"].tolist()[::2] == pytest.approx([0.0, 0.02, 0.04])
    assert frame["completeness_error"].isna().tolist() == [False, True, False, True, False]
    assert frame[list(GEOMETRY)].to_dict("records") == [GEOMETRY] * 5

    plain = results.load(outdir["outdir"], "s1", "vanilla")
    assert plain.attributions is None
    np.testing.assert_array_equal(plain.masks, np.stack([outdir["known"]["vanilla", n][0] for n in names]))
    chunks = list(results.iter_mask_chunks(outdir["outdir"], "s1", "vanilla", ("masks", "attributions")))
    assert [c.names for c in chunks] == [names[:3], names[3:]] and chunks[1].attributions.shape == (2, 8, 8)


def test_load_a_broken_or_missing_file_is_one_line(outdir):
    layout = outdir["layout"]
    path = Path(layout.mask_file("s1", "chunk0001", "vanilla"))
    path.write_bytes(path.read_bytes()[:100])
    one_line(results.load, outdir["outdir"], "s1", "vanilla", match=rf"^mask file '{path}' is truncated or corrupt \(")
    path.unlink()
    one_line(results.load, outdir["outdir"], "s1", "vanilla", match=rf"^mask file '{path}': file not found")
    one_line(results.load, outdir["outdir"], "s1", "occlusion", match=r"^mask file '.*/masks/s1/occlusion/chunk0000\.npz': file not found")
    one_line(results.load, outdir["outdir"], "s9", "vanilla", match=r"^results: slide 's9' has no tile table '.*/tiles/s9\.csv'")


@pytest.mark.parametrize("stale", ["other", "order", "fewer"])
def test_load_a_mask_file_of_other_tiles_than_the_table_is_an_error(outdir, stale):
    """A mask file left from another tiling (the table was rewritten; the file was not): not silently loaded."""
    layout, names = outdir["layout"], outdir["names"]
    stored = {"other": ["x0_y0", "x32_y0", "x96_y96"], "order": [names[1], names[0], names[2]], "fewer": names[:2]}[stale]
    masks, attributions, _ = mask_arrays(len(stored))
    path = layout.mask_file("s1", "chunk0000", "vanilla")
    results.write_mask_chunk(path, stored, [0] * len(stored), [0] * len(stored), masks, attributions,
                             [record(0, 0.5)] * len(stored), JOB)  # fmt: skip
    one_line(results.load, outdir["outdir"], "s1", "vanilla", match=rf"^mask file '{path}': ")  # like the evaluate job's line
    assert [c.names for c in results.iter_mask_chunks(outdir["outdir"], "s1", "gradcam")] == [names[:3], names[3:]]


# -- what a mask job stores ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "method",
    [
        sg.config.MethodSpec("vanilla", "vanilla", False, {}),
        sg.config.MethodSpec("vanilla_smooth", "vanilla", True, {"nsamples": 3, "stdev_spread": 0.15, "magnitude": True, "seed": 0}),
        sg.config.MethodSpec("integrated_gradients", "integrated_gradients", False, {"x_steps": 4, "batch_size": 20}),
        sg.config.MethodSpec("gradcam", "gradcam", False, {}),
        sg.config.MethodSpec("xrai", "xrai", False, {"steps": 4}),
    ],
    ids=lambda m: m.id,
)
def test_a_mask_jobs_masks_and_attributions_are_its_raws_normalised_and_reduced(tmp_path, model_dir, ihc_tiles, method):
    """masks = methods.normalize(raw), attributions = methods.reduce(raw), per tile, of the raw it stores
    (save_raw); and the masks are the library's (SaliencyMap) on the same tiles."""
    from slidegrad import jobs, methods

    layout = Layout(str(tmp_path))
    tiles = [Tile("s1", 64 * i, 0) for i in range(len(ihc_tiles))]
    write_tile_table(layout.tile_table("s1"), tiles, 4, {"tile_px": 64, "tile_um": 64})
    names = [t.name for t in tiles]
    results.write_tile_chunk(layout.tile_chunk("s1", "chunk0000"), names, [t.x for t in tiles], [t.y for t in tiles], ihc_tiles)
    out = layout.mask_file("s1", "chunk0000", method.id)
    jobs.run_mask_job(
        str(model_dir), layout.tile_table("s1"), "chunk0000", layout.tile_chunk("s1", "chunk0000"), method, out,
        device="cpu", threads=1, save_raw=True,
    )  # fmt: skip
    stored = results.read_mask_chunk(out, ("masks", "attributions", "raw"))
    assert stored.names == names and stored.raw is not None and len(stored.raw) == len(names)
    spec = methods.get_method(method.name)
    for i in range(len(names)):
        np.testing.assert_array_equal(stored.masks[i], methods.normalize(spec, stored.raw[i]))
        np.testing.assert_array_equal(stored.attributions[i], methods.reduce(spec, stored.raw[i]))
    model = sg.load_model(model_dir)
    direct = sg.SaliencyMap(model).explain(sg.get_preprocess_fn(model)(ihc_tiles), method.name, smooth=method.smooth, **method.params)
    np.testing.assert_allclose(stored.masks, direct.masks, atol=1e-6)
    assert [r["class_idx"] for r in stored.records] == [int(k) for k in direct.classes]
    loaded = results.load(str(tmp_path), "s1", method.id, attributions=True)
    np.testing.assert_array_equal(loaded.masks, stored.masks)
    np.testing.assert_array_equal(loaded.attributions, stored.attributions)
