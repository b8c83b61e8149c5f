"""slidegrad.tfrecords against TensorFlow's own TFRecord reader and writer.

Runs in its own pytest process (``make test`` calls tests/tf separately), so
TensorFlow never shares a process with torch.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from slidegrad.tfrecords import (  # noqa: E402
    TFRecordTiles,
    parse_example,
    read_records,
    serialize_example,
    write_records,
    write_tfrecord,
)

SPEC = {
    "slide": tf.io.FixedLenFeature([], tf.string),
    "image_raw": tf.io.FixedLenFeature([], tf.string),
    "loc_x": tf.io.FixedLenFeature([], tf.int64),
    "loc_y": tf.io.FixedLenFeature([], tf.int64),
}


def test_no_torch_in_this_process():
    assert "torch" not in sys.modules


def _tf_example(slide: str, x: int, y: int, image_raw: bytes) -> bytes:
    """A Slideflow record, built as slideflow.io.tensorflow.tfrecord_example builds it."""
    feature = {
        "slide": tf.train.Feature(bytes_list=tf.train.BytesList(value=[slide.encode()])),
        "image_raw": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_raw])),
        "loc_x": tf.train.Feature(int64_list=tf.train.Int64List(value=[x])),
        "loc_y": tf.train.Feature(int64_list=tf.train.Int64List(value=[y])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@pytest.fixture(scope="module")
def tf_tiles(ihc):
    """(x, y, image) of 64 x 64 IHC tiles; locations as Slideflow stores them (centres, 128-px tiles)."""
    corners = [(0, 0), (320, 270), (150, 240), (330, 180), (448, 448)]
    return [(x + 64, y + 64, np.ascontiguousarray(ihc[y : y + 64, x : x + 64])) for x, y in corners]


def test_reads_records_written_by_tensorflow(tmp_path, tf_tiles):
    path = tmp_path / "tf-slide.tfrecords"
    raws = {}
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i, (x, y, image) in enumerate(tf_tiles):
            encode = tf.io.encode_png if i == 1 else tf.io.encode_jpeg
            raws[(x, y)] = encode(tf.constant(image)).numpy()
            writer.write(_tf_example("tf-slide", x, y, raws[(x, y)]))

    reader = TFRecordTiles(path)
    assert reader.slide == "tf-slide"
    assert reader.locations() == [(x, y) for x, y, _ in tf_tiles]
    for i, (x, y, image) in enumerate(tf_tiles):
        raw = raws[(x, y)]
        assert reader.read_raw(x, y) == raw
        ours = reader.read(x, y)
        if i == 1:  # PNG: lossless
            np.testing.assert_array_equal(ours, image)
            continue
        # Pillow and TensorFlow share libjpeg-turbo: equal with the accurate integer DCT ...
        accurate = tf.io.decode_jpeg(raw, channels=3, dct_method="INTEGER_ACCURATE").numpy()
        np.testing.assert_array_equal(ours, accurate)
        # ... and close to TensorFlow's default (fast integer DCT; measured: mean <= 1.6, max <= 11).
        fast = tf.io.decode_jpeg(raw, channels=3).numpy()
        assert np.abs(ours.astype(int) - fast.astype(int)).mean() < 2.5
        assert np.abs(ours.astype(int) - image.astype(int)).mean() < 3

    ours = list(read_records(path))
    theirs = [tf.io.parse_single_example(r, SPEC) for r in tf.data.TFRecordDataset(str(path))]
    assert len(ours) == len(theirs) == len(tf_tiles)
    for mine, other in zip(ours, theirs):
        assert mine == {key: [value.numpy()] for key, value in other.items()}


def test_tensorflow_parses_our_records(tmp_path, tf_tiles):
    tiles = [("our-slide", x, y, image) for x, y, image in tf_tiles]
    for fmt in ("jpeg", "png"):
        path = tmp_path / f"ours-{fmt}.tfrecords"
        assert write_tfrecord(path, tiles, fmt=fmt) == len(tiles)
        reader = TFRecordTiles(path)
        records = list(tf.data.TFRecordDataset(str(path)))  # TensorFlow checks the CRCs too
        assert len(records) == len(tiles)
        for record, (slide, x, y, image) in zip(records, tiles):
            parsed = tf.io.parse_single_example(record, SPEC)
            assert parsed["slide"].numpy() == slide.encode()
            assert (int(parsed["loc_x"]), int(parsed["loc_y"])) == (x, y)
            assert parsed["image_raw"].numpy() == reader.read_raw(x, y)
            decoded = tf.io.decode_image(parsed["image_raw"], channels=3).numpy()
            if fmt == "png":
                np.testing.assert_array_equal(decoded, image)
            else:
                accurate = tf.io.decode_jpeg(parsed["image_raw"], dct_method="INTEGER_ACCURATE").numpy()
                np.testing.assert_array_equal(reader.read(x, y), accurate)
                assert np.abs(decoded.astype(int) - image.astype(int)).mean() < 3


def test_framing_and_examples_match_tensorflow_byte_for_byte(tmp_path):
    features = {
        "slide": b"s",
        "loc_x": [-5, 2**40],
        "loc_y": 3,
        "f": np.array([0.25, -1.5], dtype=np.float32),
        "names": [b"a", b"", b"c"],
    }
    ours = serialize_example(features)
    example = tf.train.Example.FromString(ours)
    feature = example.features.feature
    assert list(feature["loc_x"].int64_list.value) == [-5, 2**40]
    assert list(feature["f"].float_list.value) == [0.25, -1.5]
    assert list(feature["names"].bytes_list.value) == [b"a", b"", b"c"]
    assert parse_example(example.SerializeToString()) == parse_example(ours)

    # Same payloads (of several sizes, so both CRC code paths run): identical files.
    payloads = [ours, bytes(range(256)) * 40, b"", b"x" * 3000]
    tf_path, our_path = tmp_path / "tf.tfrecords", tmp_path / "ours.tfrecords"
    with tf.io.TFRecordWriter(str(tf_path)) as writer:
        for payload in payloads:
            writer.write(payload)
    from slidegrad.tfrecords import _frame

    our_path.write_bytes(b"".join(_frame(p) for p in payloads))
    assert our_path.read_bytes() == tf_path.read_bytes()

    write_records(our_path, [features])
    parsed = tf.io.parse_single_example(
        next(iter(tf.data.TFRecordDataset(str(our_path)))),
        {
            "loc_x": tf.io.FixedLenFeature([2], tf.int64),
            "f": tf.io.FixedLenFeature([2], tf.float32),
            "names": tf.io.VarLenFeature(tf.string),
        },
    )
    assert parsed["loc_x"].numpy().tolist() == [-5, 2**40]
    assert parsed["f"].numpy().tolist() == [0.25, -1.5]
    assert parsed["names"].values.numpy().tolist() == [b"a", b"", b"c"]
