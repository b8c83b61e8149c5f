"""Tests for slidegrad.tfrecords: Slideflow TFRecords read and written without TensorFlow.

Tiles are cut from skimage's immunohistochemistry image (fixture ``ihc``).
TensorFlow interoperability is tested in tests/tf/test_tfrecords_tf.py.
"""

from __future__ import annotations

import struct
import subprocess
import sys

import numpy as np
import pytest

from slidegrad.errors import InputError
from slidegrad.tfrecords import (
    TFRecordTiles,
    crc32c,
    parse_example,
    read_records,
    serialize_example,
    slideflow_location,
    tfrecord_path,
    top_left_from_slideflow,
    write_records,
    write_tfrecord,
)


def _tiles(ihc, slide="slide-1", px=64, step=96):
    """(slide, x, y, image) for a grid of px x px tiles of the IHC image (x, y = top-left)."""
    return [
        (slide, x, y, np.ascontiguousarray(ihc[y : y + px, x : x + px]))
        for y in range(0, ihc.shape[0] - px + 1, step)
        for x in range(0, ihc.shape[1] - px + 1, step)
    ]


def _error(func, *args) -> str:
    with pytest.raises(InputError) as info:
        func(*args)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.fixture()
def png_file(tmp_path, ihc):
    path = tmp_path / "slide-1.tfrecords"
    write_tfrecord(path, _tiles(ihc), fmt="png")
    return path


# -- CRC-32C ---------------------------------------------------------------


def _crc_bitwise(data: bytes, crc: int = 0) -> int:
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_crc32c_known_values():
    assert crc32c(b"") == 0
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4: 32 bytes of zeros
    assert crc32c(b"\xff" * 32) == 0x62A8AB43  # RFC 3720 B.4: 32 bytes of 0xff


@pytest.mark.parametrize("n", [1, 4, 31, 2047, 2048, 2049, 4096 + 5, 33 * 32 + 7, 70001])
def test_crc32c_table_and_vectorised_paths_agree_with_bitwise(n):
    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()
    assert crc32c(data) == _crc_bitwise(data)
    assert crc32c(data, 0x1234ABCD) == _crc_bitwise(data, 0x1234ABCD)
    # continuation: crc(a + b) == crc(b, crc(a))
    assert crc32c(data[n // 3 :], crc32c(data[: n // 3])) == crc32c(data)


# -- round trips -------------------------------------------------------------


def test_png_round_trip_is_pixel_exact(png_file, ihc):
    tiles = _tiles(ihc)
    reader = TFRecordTiles(png_file)
    assert reader.slide == "slide-1" and reader.slides == ("slide-1",)
    assert len(reader) == reader.n_records == len(tiles) and reader.duplicates == 0
    assert reader.locations() == [(x, y) for _, x, y, _ in tiles]
    for _, x, y, image in tiles:
        assert (x, y) in reader
        out = reader.read(x, y)
        assert out.dtype == np.uint8 and out.shape == (64, 64, 3)
        np.testing.assert_array_equal(out, image)
    assert reader.read_raw(0, 0)[:8] == b"\x89PNG\r\n\x1a\n"


def test_jpeg_round_trip_within_jpeg_tolerance(tmp_path, ihc):
    # not square: a swapped height/width shows up
    tiles = [
        ("s", x, y, np.ascontiguousarray(ihc[y : y + 48, x : x + 80])) for x, y in [(0, 0), (320, 270), (150, 240)]
    ]
    path = tmp_path / "s.tfrecords"
    assert write_tfrecord(path, tiles) == 3
    reader = TFRecordTiles(path)
    for _, x, y, image in tiles:
        out = reader.read(x, y)
        assert out.dtype == np.uint8 and out.shape == (48, 80, 3)
        assert np.abs(out.astype(int) - image.astype(int)).mean() < 3
    assert reader.read_raw(0, 0)[:2] == b"\xff\xd8"


def test_already_encoded_bytes_are_stored_as_is(tmp_path, png_file):
    raw = TFRecordTiles(png_file).read_raw(96, 96)
    path = tmp_path / "copy.tfrecords"
    write_tfrecord(path, [("copy", 5, -7, raw)], fmt="jpeg")
    copy = TFRecordTiles(path)
    assert copy.locations() == [(5, -7)] and copy.read_raw(5, -7) == raw


def test_read_records_gives_slideflow_features(png_file, ihc):
    records = list(read_records(png_file))
    assert len(records) == len(_tiles(ihc))
    first = records[0]
    assert set(first) == {"slide", "image_raw", "loc_x", "loc_y"}
    assert first["slide"] == [b"slide-1"] and first["loc_x"] == [0] and first["loc_y"] == [0]
    assert isinstance(first["image_raw"][0], bytes)


def test_example_codec_round_trip(tmp_path):
    features = {
        "b": [b"\x00\xff", "é"],
        "one": 7,
        "ints": [0, -1, 1, 2**63 - 1, -(2**63), 300],
        "floats": np.array([0.5, -2.25, 1e30], dtype=np.float32),
        "empty_int": np.zeros(0, dtype=np.int64),
        "empty_float": np.zeros(0, dtype=np.float32),
    }
    parsed = parse_example(serialize_example(features))
    assert parsed == {
        "b": [b"\x00\xff", "é".encode()],
        "one": [7],
        "ints": [0, -1, 1, 2**63 - 1, -(2**63), 300],
        "floats": [0.5, -2.25, float(np.float32(1e30))],
        "empty_int": [],
        "empty_float": [],
    }
    path = tmp_path / "x.tfrecords"
    assert write_records(path, [features, {"n": 1}]) == 2
    assert [r.get("n") for r in read_records(path)] == [None, [1]]


def _ld(field: int, payload: bytes) -> bytes:
    assert len(payload) < 128
    return bytes([field << 3 | 2, len(payload)]) + payload


def test_unpacked_lists_and_unknown_fields_are_read():
    # Int64List with unpacked values (wire type 0) and FloatList with unpacked fixed32 (wire type 5),
    # plus unknown fields at every level; TensorFlow accepts both encodings.
    int_list = b"\x08\x05" + b"\x08" + b"\xff" * 9 + b"\x01" + b"\x10\x09"  # 5, -1, unknown field 2
    float_list = b"\x0d" + struct.pack("<f", 1.5) + b"\x0d" + struct.pack("<f", -3.0)
    entry_i = _ld(1, b"loc_x") + _ld(2, _ld(3, int_list))
    entry_f = _ld(1, b"f") + _ld(2, _ld(2, float_list) + b"\x20\x01") + b"\x18\x03"
    example = _ld(1, _ld(1, entry_i) + _ld(1, entry_f) + b"\x10\x01") + b"\x25\x00\x00\x00\x00"
    assert parse_example(example) == {"loc_x": [5, -1], "f": [1.5, -3.0]}


def test_bad_example_and_feature_values():
    assert "not a tf.train.Example" in _error(parse_example, b"\x0a\x05\x01")
    assert "mixes" in _error(serialize_example, {"x": [1, b"a"]})
    assert "type is unknown" in _error(serialize_example, {"x": []})
    assert "int64" in _error(serialize_example, {"x": 2**63})
    assert "float32" in _error(serialize_example, {"x": 1e300})


# -- locations ---------------------------------------------------------------


def test_slideflow_locations_are_tile_centres():
    assert slideflow_location(256, 512, 128) == (320, 576)
    assert slideflow_location(0, 0, 129) == (64, 64)  # int(x + 129 / 2)
    assert top_left_from_slideflow(320, 576, 128) == (256, 512)
    assert top_left_from_slideflow(*slideflow_location(7, 9, 301), 301) == (7, 9)
    assert "extract_px" in _error(slideflow_location, 0, 0, 0)


def test_missing_location_names_file_and_nearby_tiles(png_file, ihc):
    reader = TFRecordTiles(png_file)
    message = _error(reader.read, 100, 90)
    n = len(_tiles(ihc))
    assert message.startswith(f"'{png_file}': no tile at loc_x=100, loc_y=90 ({n} tiles; nearest: (96, 96)")
    assert (100, 90) not in reader and (96,) not in reader and "a" not in reader
    assert "integers" in _error(reader.read, 1.5, 0)


def test_duplicate_locations_keep_the_first(tmp_path, ihc):
    a, b = ihc[:32, :32], ihc[64:96, 64:96]
    path = tmp_path / "d.tfrecords"
    write_tfrecord(path, [("d", 1, 1, a), ("d", 1, 1, b), ("e", 2, 2, b)], fmt="png")
    reader = TFRecordTiles(path)
    assert reader.duplicates == 1 and reader.n_records == 3 and len(reader) == 2
    np.testing.assert_array_equal(reader.read(1, 1), a)
    assert reader.slides == ("d", "e") and reader.slide is None


def test_empty_file_has_no_tiles(tmp_path):
    path = tmp_path / "empty.tfrecords"
    path.write_bytes(b"")
    reader = TFRecordTiles(path)
    assert reader.locations() == [] and reader.slide is None
    assert "the file has no tiles" in _error(reader.read, 0, 0)


# -- bad files -----------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        b"slide,loc_x,loc_y\nslide-1,0,0\nslide-1,96,0\n",
        b"hello\n",
    ],
    ids=["random-bytes", "text", "short-text"],
)
def test_not_a_tfrecord_file(tmp_path, content):
    path = tmp_path / "bad.tfrecords"
    path.write_bytes(content)
    for func in (TFRecordTiles, lambda p: list(read_records(p))):
        message = _error(func, path)
        assert message.startswith(f"'{path}': not a TFRecord file")


def test_truncated_file(tmp_path, png_file):
    data = png_file.read_bytes()
    first = 12 + struct.unpack("<Q", data[:8])[0] + 4
    cases = {"end": data[:-3], "header": data[: first + 5], "data": data[: first + 40]}
    for label, content in cases.items():
        path = tmp_path / f"cut-{label}.tfrecords"
        path.write_bytes(content)
        for func in (TFRecordTiles, lambda p: list(read_records(p))):
            message = _error(func, path)
            assert message.startswith(f"'{path}': truncated file: record"), message


def test_corrupt_checksums(tmp_path, png_file):
    data = bytearray(png_file.read_bytes())
    first = 12 + struct.unpack("<Q", data[:8])[0] + 4
    cases = {
        "data": (first + 12 + 100, "record 1 at byte %d has a bad data checksum" % first),
        "length-crc": (first + 9, "record 1 at byte %d has a bad length checksum" % first),
        "first-length": (0, "not a TFRecord file"),
    }
    for label, (where, expected) in cases.items():
        bad = bytearray(data)
        bad[where] ^= 0x01
        path = tmp_path / f"crc-{label}.tfrecords"
        path.write_bytes(bytes(bad))
        assert expected in _error(TFRecordTiles, path)


def test_valid_framing_but_not_slideflow_records(tmp_path):
    path = tmp_path / "x.tfrecords"
    write_records(path, [{"slide": b"a", "image_raw": b"x"}])
    assert "record 0 at byte 0 has no 'loc_x' feature (features: image_raw, slide)" in _error(TFRecordTiles, path)
    write_records(path, [{"slide": b"a", "image_raw": b"x", "loc_x": [1, 2], "loc_y": 0}])
    assert "'loc_x' should hold one int" in _error(TFRecordTiles, path)
    write_tfrecord(path, [("a", 0, 0, b"not an image")])
    assert "image_raw is not a readable JPEG or PNG" in _error(TFRecordTiles(path).read, 0, 0)


def test_missing_paths(tmp_path):
    assert _error(TFRecordTiles, tmp_path / "nope.tfrecords").endswith("nope.tfrecords': file not found")
    assert "is a directory" in _error(TFRecordTiles, tmp_path)
    assert "file not found" in _error(read_records, tmp_path / "nope.tfrecords")


def test_write_errors_leave_no_partial_file(tmp_path, ihc):
    path = tmp_path / "w.tfrecords"
    assert "fmt must be" in _error(write_tfrecord, path, [], "tiff")
    assert "uint8 (H, W, 3)" in _error(write_tfrecord, path, [("s", 0, 0, ihc[:8, :8, 0])])
    assert "loc_x must be an int64" in _error(write_tfrecord, path, [("s", 0.5, 0, ihc[:8, :8])])
    assert "does not exist" in _error(write_tfrecord, tmp_path / "no" / "w.tfrecords", [])
    assert not path.exists() and list(tmp_path.iterdir()) == []

    def tiles():
        yield ("s", 0, 0, ihc[:8, :8])
        raise InputError("boom")

    with pytest.raises(InputError, match="boom"):
        write_tfrecord(path, tiles())
    assert list(tmp_path.iterdir()) == []


# -- finding a slide's file ----------------------------------------------------


def test_tfrecord_path(tmp_path, ihc):
    folder = tmp_path / "tfrecords"
    assert "TFRecord folder not found" in _error(tfrecord_path, folder, "a")
    folder.mkdir()
    assert "the folder is empty" in _error(tfrecord_path, folder, "a")
    (folder / "notes.txt").write_text("x")
    assert "no .tfrecords files; it holds 'notes.txt'" in _error(tfrecord_path, folder, "a")
    for name in ["b", "c", "d", "e", "f", "g"]:
        write_tfrecord(folder / f"{name}.tfrecords", [(name, 0, 0, ihc[:8, :8])])
    assert tfrecord_path(folder, "b") == folder / "b.tfrecords"
    message = _error(tfrecord_path, folder, "a")
    assert message == (
        f"'{folder}': no 'a.tfrecords' for slide 'a' (6 .tfrecords files: 'b.tfrecords', "
        "'c.tfrecords', 'd.tfrecords', 'e.tfrecords', 'f.tfrecords', ... (1 more))"
    )
    assert "is a file" in _error(tfrecord_path, folder / "b.tfrecords", "b")
    assert "file-name stem" in _error(tfrecord_path, folder, "../b")


def test_no_deep_learning_framework_is_imported():
    code = (
        "import sys, slidegrad.tfrecords; "
        "bad = [m for m in ('torch', 'tensorflow', 'google.protobuf') if m in sys.modules]; "
        "assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
