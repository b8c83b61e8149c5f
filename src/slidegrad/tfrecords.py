"""Slideflow TFRecords without TensorFlow: read and write tile records.

Slideflow stores the tiles it extracts from a slide in ``{slide}.tfrecords``
(one file per slide, in one directory).  Each record is a serialized
``tf.train.Example`` with the features

``slide``      bytes: the slide name (UTF-8)
``image_raw``  bytes: the tile, a JPEG or PNG file
``loc_x``      int64: level-0 x of the tile
``loc_y``      int64: level-0 y of the tile

This module reads and writes such files with numpy and Pillow only (no
TensorFlow, torch or protobuf), so it runs in the framework-free environment:
TFRecord framing and a minimal ``tf.train.Example`` codec are implemented
here, and every CRC is checked on reading.

Tile locations
--------------
In Slideflow >= 2, ``loc_x`` / ``loc_y`` are the level-0 coordinates of the
tile's **centre**, not its top-left corner: the tile workers of every slide
backend (``slideflow/slide/backends/vips.py``, ``cucim.py``, ...,
``tile_worker``) store ``loc = [int(x + full_extract_px / 2),
int(y + full_extract_px / 2)]`` for a tile whose top-left level-0 corner is
``(x, y)``, where ``full_extract_px`` is the tile width in level-0 pixels, and
``WSI.extract_tiles`` writes that ``loc`` as ``loc_x``, ``loc_y``.  Slideflow's
own look-up, ``get_tfrecord_by_location(tfrecord, (loc_x, loc_y))``, is an
exact match on the stored pair (the first matching record wins).

:class:`TFRecordTiles` indexes and reads by the stored pair, as Slideflow
does.  slidegrad's workflow uses top-left level-0 ``(x, y)`` (``WSI.extract_px``
wide); convert with :func:`slideflow_location` and
:func:`top_left_from_slideflow` (``loc = top_left + extract_px // 2``).

Every bad input raises :class:`~slidegrad.errors.InputError` with one line that
names the file and says what was wrong.
"""

from __future__ import annotations

import io
import numbers
import os
import struct
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, Union

import google_crc32c
import numpy as np

from .errors import InputError, check, first_line, is_int, quote
from .files import atomic_write

__all__ = [
    "TFRecordTiles",
    "crc32c",
    "parse_example",
    "read_records",
    "serialize_example",
    "slideflow_location",
    "tfrecord_path",
    "top_left_from_slideflow",
    "write_records",
    "write_tfrecord",
]

PathLike = Union[str, os.PathLike]

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_HEADER = 12  # uint64 length + uint32 masked CRC of the length
_FOOTER = 4  # uint32 masked CRC of the data
_FORMATS = {"jpeg": "JPEG", "jpg": "JPEG", "png": "PNG"}


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------








def _open_for_reading(path: Path, name: str) -> BinaryIO:
    if not path.exists():
        raise InputError(f"{name}: file not found")
    if path.is_dir():
        raise InputError(f"{name}: is a directory, expected a .tfrecords file")
    try:
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    except OSError as exc:
        raise InputError(f"{name}: cannot read the file ({first_line(exc)})") from None


# --------------------------------------------------------------------------
# CRC-32C (Castagnoli): google-crc32c (hardware instructions where the CPU has them)
# --------------------------------------------------------------------------


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-32C (Castagnoli) of ``data``, continuing from ``crc``; ``crc32c(b"123456789") == 0xE3069283``."""
    return google_crc32c.extend(crc, data if isinstance(data, bytes) else bytes(data))


def _masked_crc(data: bytes | memoryview) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# --------------------------------------------------------------------------
# TFRecord framing
# --------------------------------------------------------------------------


def _frame(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return b"".join((header, struct.pack("<I", _masked_crc(header)), data, struct.pack("<I", _masked_crc(data))))


def _read_frame(f: BinaryIO, name: str, number: int, offset: int, size: int) -> bytes | None:
    """The data of the record at ``offset`` (None at end of file), CRCs checked."""
    header = f.read(_HEADER)
    if not header:
        return None
    where = f"record {number} at byte {offset}"
    if len(header) < _HEADER:
        if number == 0:
            raise InputError(f"{name}: not a TFRecord file ({size} bytes, shorter than a {_HEADER}-byte record header)")
        raise InputError(f"{name}: truncated file: {where} has {len(header)} of {_HEADER} header bytes")
    length, length_crc = struct.unpack("<QI", header)
    if _masked_crc(header[:8]) != length_crc:
        if number == 0:
            raise InputError(f"{name}: not a TFRecord file (the first record header has a bad checksum)")
        raise InputError(f"{name}: corrupt file: {where} has a bad length checksum")
    left = size - offset - _HEADER
    if length + _FOOTER > left:
        raise InputError(
            f"{name}: truncated file: {where} needs {length + _FOOTER} bytes after its header, " f"{max(left, 0)} left"
        )
    data = f.read(length)
    footer = f.read(_FOOTER)
    if len(data) != length or len(footer) != _FOOTER:
        raise InputError(f"{name}: truncated file: {where} ends early")
    if _masked_crc(data) != struct.unpack("<I", footer)[0]:
        raise InputError(f"{name}: corrupt file: {where} has a bad data checksum")
    return data


def _iter_frames(f: BinaryIO, name: str) -> Iterator[tuple[int, int, bytes]]:
    """(record number, byte offset, data) of every record, CRCs checked."""
    size = os.fstat(f.fileno()).st_size
    number, offset = 0, 0
    while True:
        data = _read_frame(f, name, number, offset, size)
        if data is None:
            return
        yield number, offset, data
        number += 1
        offset += _HEADER + len(data) + _FOOTER


# --------------------------------------------------------------------------
# tf.train.Example: a minimal protobuf codec
# --------------------------------------------------------------------------
#
# Example  { Features features = 1; }
# Features { map<string, Feature> feature = 1; }   (entries: key = 1, value = 2)
# Feature  { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2;
#                         Int64List int64_list = 3; } }
# BytesList { repeated bytes value = 1; }
# FloatList { repeated float value = 1 [packed = true]; }
# Int64List { repeated int64 value = 1 [packed = true]; }


class _ParseError(Exception):
    pass


def _read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise _ParseError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _ParseError("varint longer than 10 bytes")


def _fields(buf: bytes, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, a, b) per field: varint value in ``a``, else the span buf[a:b]."""
    while pos < end:
        key, pos = _read_varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise _ParseError("field number 0")
        if wire == 0:
            value, pos = _read_varint(buf, pos, end)
            yield field, wire, value, pos
            continue
        if wire == 2:
            n, pos = _read_varint(buf, pos, end)
        elif wire == 1:
            n = 8
        elif wire == 5:
            n = 4
        else:
            raise _ParseError(f"unsupported wire type {wire}")
        if pos + n > end:
            raise _ParseError("field runs past the end of its message")
        yield field, wire, pos, pos + n
        pos += n


def _signed64(value: int) -> int:
    value &= 0xFFFFFFFFFFFFFFFF
    return value - (1 << 64) if value >> 63 else value


def _parse_list(buf: bytes, start: int, end: int, kind: int) -> list[Any]:
    values: list[Any] = []
    for field, wire, a, b in _fields(buf, start, end):
        if field != 1:
            continue  # unknown field
        if kind == 1:  # bytes
            if wire != 2:
                raise _ParseError(f"bytes_list value with wire type {wire}")
            values.append(bytes(buf[a:b]))
        elif kind == 2:  # float
            if wire == 5:
                values.append(struct.unpack_from("<f", buf, a)[0])
            elif wire == 2:
                if (b - a) % 4:
                    raise _ParseError("packed float_list length is not a multiple of 4")
                values.extend(struct.unpack_from(f"<{(b - a) // 4}f", buf, a))
            else:
                raise _ParseError(f"float_list value with wire type {wire}")
        elif wire == 0:  # int64, unpacked
            values.append(_signed64(a))
        elif wire == 2:  # int64, packed
            pos = a
            while pos < b:
                value, pos = _read_varint(buf, pos, b)
                values.append(_signed64(value))
        else:
            raise _ParseError(f"int64_list value with wire type {wire}")
    return values


def _parse_feature(buf: bytes, start: int, end: int) -> list[Any]:
    kind, values = 0, []
    for field, wire, a, b in _fields(buf, start, end):
        if field not in (1, 2, 3):
            continue  # unknown field
        if wire != 2:
            raise _ParseError(f"Feature field {field} with wire type {wire}")
        if field != kind:  # oneof: a later kind replaces an earlier one
            kind, values = field, []
        values.extend(_parse_list(buf, a, b, field))
    return values


def _parse_example(buf: bytes) -> dict[str, list[Any]]:
    features: dict[str, list[Any]] = {}
    for field, wire, a, b in _fields(buf, 0, len(buf)):
        if field != 1:
            continue
        if wire != 2:
            raise _ParseError(f"Example.features with wire type {wire}")
        for f2, w2, a2, b2 in _fields(buf, a, b):
            if f2 != 1:
                continue
            if w2 != 2:
                raise _ParseError(f"Features.feature with wire type {w2}")
            key, values = "", []
            for f3, w3, a3, b3 in _fields(buf, a2, b2):
                if f3 in (1, 2) and w3 != 2:
                    raise _ParseError(f"map entry field {f3} with wire type {w3}")
                if f3 == 1:
                    try:
                        key = bytes(buf[a3:b3]).decode("utf-8")
                    except UnicodeDecodeError:
                        raise _ParseError("a feature name is not UTF-8") from None
                elif f3 == 2:
                    values = _parse_feature(buf, a3, b3)
            features[key] = values
    return features


def parse_example(data: bytes) -> dict[str, list[Any]]:
    """Decode a serialized ``tf.train.Example`` into ``{name: values}``.

    ``values`` is a list of ``bytes`` (bytes_list), ``float`` (float_list,
    float32 precision) or ``int`` (int64_list); an empty Feature gives ``[]``.
    Raises :class:`InputError` if ``data`` is not an Example.
    """
    try:
        return _parse_example(bytes(data))
    except _ParseError as exc:
        raise InputError(f"not a tf.train.Example ({exc})") from None


def _varint(value: int) -> bytes:
    value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _len_field(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _feature_values(name: str, values: Any) -> tuple[int, list[Any]]:
    """(kind, values): kind 1 bytes, 2 float, 3 int64."""
    if isinstance(values, np.ndarray):
        if values.dtype.kind in "iu":
            kind = 3
        elif values.dtype.kind == "f":
            kind = 2
        elif values.dtype.kind in "SUO":
            kind = 0
        else:
            raise InputError(f"feature {quote(name)}: unsupported dtype {values.dtype}")
        values = values.ravel().tolist()
        if kind:
            return kind, values
    elif isinstance(values, (bytes, bytearray, memoryview, str)) or not isinstance(values, Iterable):
        values = [values]
    else:
        values = list(values)
    kinds = set()
    for v in values:
        if isinstance(v, (bytes, bytearray, memoryview, str, np.bytes_, np.str_)):
            kinds.add(1)
        elif is_int(v):
            kinds.add(3)
        elif isinstance(v, numbers.Real) and not isinstance(v, bool):
            kinds.add(2)
        else:
            raise InputError(f"feature {quote(name)}: unsupported value type {type(v).__name__}")
    if not kinds:
        raise InputError(f"feature {quote(name)}: no values, so its type is unknown (pass a typed numpy array)")
    if len(kinds) > 1:
        raise InputError(f"feature {quote(name)}: mixes bytes, int and float values")
    return kinds.pop(), values


def serialize_example(features: Mapping[str, Any]) -> bytes:
    """Encode ``{name: values}`` as a serialized ``tf.train.Example``.

    ``values`` is a scalar or a list/array of one type: ``bytes``/``str``
    (bytes_list; str as UTF-8), ``int`` (int64_list) or ``float`` (float_list,
    stored as float32).  int64 and float lists are packed, as TensorFlow writes them.
    """
    check(isinstance(features, Mapping), f"features must be a mapping, got {type(features).__name__}")
    entries = []
    for name, raw in features.items():
        check(isinstance(name, str), f"feature names must be str, got {name!r}")
        kind, values = _feature_values(name, raw)
        if kind == 1:
            payload = b"".join(_len_field(1, v.encode("utf-8") if isinstance(v, str) else bytes(v)) for v in values)
        elif kind == 3:
            for v in values:
                check(
                    _INT64_MIN <= int(v) <= _INT64_MAX,
                    f"feature {quote(name)}: {v} does not fit in int64",
                )
            payload = _len_field(1, b"".join(_varint(int(v)) for v in values)) if values else b""
        else:
            try:
                packed = struct.pack(f"<{len(values)}f", *(float(v) for v in values))
            except OverflowError:
                raise InputError(f"feature {quote(name)}: a value does not fit in float32") from None
            payload = _len_field(1, packed) if values else b""
        entry = _len_field(1, name.encode("utf-8")) + _len_field(2, _len_field(kind, payload))
        entries.append(_len_field(1, entry))
    return _len_field(1, b"".join(entries))


# --------------------------------------------------------------------------
# reading and writing files
# --------------------------------------------------------------------------


def _parse_record(data: bytes, name: str, number: int, offset: int) -> dict[str, list[Any]]:
    try:
        return _parse_example(data)
    except _ParseError as exc:
        raise InputError(f"{name}: record {number} at byte {offset} is not a tf.train.Example ({exc})") from None


def read_records(path: PathLike) -> Iterator[dict[str, list[Any]]]:
    """Iterate over the ``tf.train.Example`` records of a TFRecord file as ``{name: values}`` dicts.

    Values are lists (see :func:`parse_example`); every CRC is checked.  A
    missing, truncated, corrupt or non-TFRecord file raises :class:`InputError`.
    """
    path = Path(path)
    name = quote(path)
    if not path.exists():
        raise InputError(f"{name}: file not found")
    if path.is_dir():
        raise InputError(f"{name}: is a directory, expected a .tfrecords file")

    def records() -> Iterator[dict[str, list[Any]]]:
        with _open_for_reading(path, name) as f:
            try:
                for number, offset, data in _iter_frames(f, name):
                    yield _parse_record(data, name, number, offset)
            except OSError as exc:
                raise InputError(f"{name}: cannot read the file ({first_line(exc)})") from None

    return records()


def _write_atomic(path: PathLike, chunks: Iterable[bytes]) -> int:
    """Write the chunks to a temporary file next to ``path``, then rename it; returns the chunk count.

    The folder must exist (it is not created).
    """
    count = 0
    with atomic_write(path, "wb", where=quote(Path(path)), make_parents=False) as f:
        for chunk in chunks:
            f.write(chunk)
            count += 1
    return count


def write_records(path: PathLike, records: Iterable[Mapping[str, Any]]) -> int:
    """Write ``{name: values}`` dicts as ``tf.train.Example`` records; returns the number written.

    The file is written to a temporary name and renamed, so a failure leaves no partial file.
    """
    check(isinstance(records, Iterable), f"records must be an iterable of dicts, got {type(records).__name__}")
    return _write_atomic(path, (_frame(serialize_example(r)) for r in records))


def _encode_tile(image: Any, fmt: str, quality: int, what: str) -> bytes:
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)  # already encoded
    from PIL import Image

    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputError(f"{what}: expected a uint8 (H, W, 3) RGB array, got {arr.dtype} {arr.shape}")
    out = io.BytesIO()
    if _FORMATS[fmt] == "JPEG":
        Image.fromarray(np.ascontiguousarray(arr), "RGB").save(out, format="JPEG", quality=quality)
    else:
        Image.fromarray(np.ascontiguousarray(arr), "RGB").save(out, format="PNG")
    return out.getvalue()


def write_tfrecord(
    path: PathLike,
    tiles: Iterable[tuple[str, int, int, Any]],
    fmt: str = "jpeg",
    quality: int = 95,
) -> int:
    """Write tiles as a Slideflow-format ``.tfrecords`` file; returns the number of tiles.

    ``tiles`` yields ``(slide, loc_x, loc_y, image)``: ``image`` a uint8
    (H, W, 3) RGB array, encoded as ``fmt`` (``"jpeg"``/``"jpg"`` at
    ``quality``, or lossless ``"png"``), or already-encoded JPEG/PNG ``bytes``
    stored as is.  ``loc_x``/``loc_y`` are stored as given: Slideflow >= 2
    stores tile centres (see :func:`slideflow_location`).  Records have the
    features ``slide``, ``image_raw``, ``loc_x``, ``loc_y``.
    """
    check(
        isinstance(fmt, str) and fmt.lower() in _FORMATS,
        f"fmt must be 'jpeg', 'jpg' or 'png', got {fmt!r}",
    )
    fmt = fmt.lower()
    check(isinstance(tiles, Iterable), f"tiles must be an iterable of tuples, got {type(tiles).__name__}")
    check(is_int(quality) and 1 <= quality <= 100, f"quality must be an integer 1..100, got {quality!r}")

    def records() -> Iterator[bytes]:
        for i, tile in enumerate(tiles):
            what = f"{quote(path)}: tile {i}"
            if not (isinstance(tile, tuple) and len(tile) == 4):
                raise InputError(f"{what}: expected a (slide, loc_x, loc_y, image) tuple")
            slide, x, y, image = tile
            if not isinstance(slide, str):
                raise InputError(f"{what}: slide name must be str, got {type(slide).__name__}")
            for axis, v in (("loc_x", x), ("loc_y", y)):
                if not (is_int(v) and _INT64_MIN <= int(v) <= _INT64_MAX):
                    raise InputError(f"{what}: {axis} must be an int64 integer, got {v!r}")
            features = {
                "slide": slide.encode("utf-8"),
                "image_raw": _encode_tile(image, fmt, quality, what),
                "loc_x": int(x),
                "loc_y": int(y),
            }
            yield _frame(serialize_example(features))

    return _write_atomic(path, records())


# --------------------------------------------------------------------------
# tile locations
# --------------------------------------------------------------------------


def slideflow_location(x: int, y: int, extract_px: int) -> tuple[int, int]:
    """The ``(loc_x, loc_y)`` Slideflow >= 2 stores for the tile with top-left level-0 ``(x, y)``.

    The tile centre, ``(x + extract_px // 2, y + extract_px // 2)``, with
    ``extract_px`` the tile width in level-0 pixels (``WSI.extract_px``;
    Slideflow's ``full_extract_px``).
    """
    check(is_int(extract_px) and extract_px >= 1, f"extract_px must be an integer >= 1, got {extract_px!r}")
    check(is_int(x) and is_int(y), f"tile location must be integers, got x={x!r}, y={y!r}")
    half = int(extract_px) // 2
    return int(x) + half, int(y) + half


def top_left_from_slideflow(loc_x: int, loc_y: int, extract_px: int) -> tuple[int, int]:
    """The top-left level-0 ``(x, y)`` of the tile Slideflow >= 2 stored at ``(loc_x, loc_y)`` (its centre)."""
    check(is_int(extract_px) and extract_px >= 1, f"extract_px must be an integer >= 1, got {extract_px!r}")
    check(is_int(loc_x) and is_int(loc_y), f"tile location must be integers, got {loc_x!r}, {loc_y!r}")
    half = int(extract_px) // 2
    return int(loc_x) - half, int(loc_y) - half


# --------------------------------------------------------------------------
# tiles by location
# --------------------------------------------------------------------------


def _single(features: dict[str, list[Any]], key: str, kind: type, name: str, where: str) -> Any:
    values = features.get(key)
    if values is None:
        have = ", ".join(sorted(features)) or "none"
        raise InputError(f"{name}: {where} has no {key!r} feature (features: {have}); not a Slideflow tile record")
    if len(values) != 1 or not isinstance(values[0], kind) or isinstance(values[0], bool):
        raise InputError(f"{name}: {where}: feature {key!r} should hold one {kind.__name__}, got {values[:3]!r}")
    return values[0]


class TFRecordTiles:
    """The tiles of one Slideflow ``.tfrecords`` file, by stored location.

    ``TFRecordTiles(path)`` reads the file once, checking every CRC, and keeps
    each record's byte offset by ``(loc_x, loc_y)`` (not the images).  If
    several records share a location the first is kept, as Slideflow's
    ``get_tfrecord_by_location`` does.

    Attributes: ``path``; ``slides`` (tuple of the slide names found, in file
    order); ``slide`` (the one name, or None if there are several or none);
    ``n_records``; ``duplicates`` (records skipped for a repeated location).

    Locations are the stored ``loc_x``, ``loc_y``: tile centres in Slideflow
    >= 2 (see :func:`top_left_from_slideflow`).
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self._name = quote(self.path)
        self._offsets: dict[tuple[int, int], tuple[int, int]] = {}  # loc -> (record number, byte offset)
        slides: dict[str, None] = {}
        self.n_records = 0
        self.duplicates = 0
        with _open_for_reading(self.path, self._name) as f:
            try:
                for number, offset, data in _iter_frames(f, self._name):
                    where = f"record {number} at byte {offset}"
                    features = _parse_record(data, self._name, number, offset)
                    loc = (
                        _single(features, "loc_x", int, self._name, where),
                        _single(features, "loc_y", int, self._name, where),
                    )
                    _single(features, "image_raw", bytes, self._name, where)
                    if "slide" in features:
                        slide = _single(features, "slide", bytes, self._name, where)
                        slides[slide.decode("utf-8", errors="replace")] = None
                    self.n_records += 1
                    if loc in self._offsets:
                        self.duplicates += 1
                    else:
                        self._offsets[loc] = (number, offset)
            except OSError as exc:
                raise InputError(f"{self._name}: cannot read the file ({first_line(exc)})") from None
        self.slides: tuple[str, ...] = tuple(slides)
        self.slide: str | None = self.slides[0] if len(self.slides) == 1 else None

    def __repr__(self) -> str:
        return f"TFRecordTiles({str(self.path)!r}, {len(self)} tiles, slides={list(self.slides)!r})"

    def __len__(self) -> int:
        return len(self._offsets)

    def __contains__(self, location: object) -> bool:
        if not (isinstance(location, (tuple, list)) and len(location) == 2):
            return False
        x, y = location
        return is_int(x) and is_int(y) and (int(x), int(y)) in self._offsets

    def locations(self) -> list[tuple[int, int]]:
        """The ``(loc_x, loc_y)`` of every tile, in file order."""
        return list(self._offsets)

    def _nearest(self, x: int, y: int, k: int = 3) -> str:
        locs = np.array(list(self._offsets), dtype=np.float64)
        d = np.hypot(locs[:, 0] - x, locs[:, 1] - y)
        picks = np.argsort(d, kind="stable")[:k]
        return ", ".join(f"({int(locs[i, 0])}, {int(locs[i, 1])})" for i in picks)

    def _lookup(self, x: int, y: int) -> tuple[int, int]:
        if not (is_int(x) and is_int(y)):
            raise InputError(f"{self._name}: tile location must be integers, got loc_x={x!r}, loc_y={y!r}")
        x, y = int(x), int(y)
        hit = self._offsets.get((x, y))
        if hit is None:
            n = len(self._offsets)
            hint = f"{n} tiles; nearest: {self._nearest(x, y)}" if n else "the file has no tiles"
            raise InputError(f"{self._name}: no tile at loc_x={x}, loc_y={y} ({hint})")
        return hit

    def check(self, x: int, y: int) -> None:
        """InputError (naming the file and the nearest stored locations) unless a tile is stored at ``(x, y)``."""
        self._lookup(x, y)

    def _record(self, x: int, y: int) -> dict[str, list[Any]]:
        number, offset = self._lookup(x, y)
        with _open_for_reading(self.path, self._name) as f:
            try:
                size = os.fstat(f.fileno()).st_size
                f.seek(offset)
                data = _read_frame(f, self._name, number, offset, size)
            except OSError as exc:
                raise InputError(f"{self._name}: cannot read the file ({first_line(exc)})") from None
        if data is None:
            raise InputError(f"{self._name}: record {number} at byte {offset} is gone (file changed?)")
        features = _parse_record(data, self._name, number, offset)
        where = f"record {number} at byte {offset}"
        loc = (_single(features, "loc_x", int, self._name, where), _single(features, "loc_y", int, self._name, where))
        if loc != (int(x), int(y)):
            raise InputError(f"{self._name}: {where} moved (file changed since it was indexed?)")
        return features

    def read_raw(self, x: int, y: int) -> bytes:
        """The encoded image (JPEG or PNG bytes) of the tile stored at ``(loc_x, loc_y) = (x, y)``."""
        features = self._record(x, y)
        return _single(features, "image_raw", bytes, self._name, f"tile at loc_x={x}, loc_y={y}")

    def read(self, x: int, y: int) -> np.ndarray:
        """The decoded tile stored at ``(loc_x, loc_y) = (x, y)``: uint8 (H, W, 3) RGB.

        Decoded with Pillow (alpha dropped, grey expanded to RGB).  JPEG pixels
        equal TensorFlow's ``decode_jpeg(..., dct_method="INTEGER_ACCURATE")``;
        TensorFlow's default (fast integer DCT, which Slideflow's TensorFlow
        backend uses) differs by about 1-2 levels on average.
        """
        from PIL import Image, UnidentifiedImageError

        raw = self.read_raw(x, y)
        what = f"{self._name}: tile at loc_x={x}, loc_y={y}"
        try:
            with Image.open(io.BytesIO(raw)) as im:
                fmt = im.format
                rgb = im.convert("RGB") if fmt in ("JPEG", "PNG") else None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise InputError(f"{what}: image_raw is not a readable JPEG or PNG ({first_line(exc)})") from None
        if rgb is None:
            raise InputError(f"{what}: image_raw is {fmt}, expected JPEG or PNG")
        return np.asarray(rgb, dtype=np.uint8).copy()


# --------------------------------------------------------------------------
# finding a slide's file
# --------------------------------------------------------------------------


def tfrecord_path(directory: PathLike, slide: str) -> Path:
    """The path of ``{slide}.tfrecords`` in ``directory`` (Slideflow's layout: one file per slide).

    Raises :class:`InputError` naming the folder and briefly listing what it
    holds if the folder or the file is missing.
    """
    directory = Path(directory)
    dname = quote(directory)
    check(
        isinstance(slide, str) and slide.strip() != "" and "/" not in slide and os.sep not in slide,
        f"slide must be a non-empty file-name stem, got {slide!r}",
    )
    if not directory.exists():
        raise InputError(f"{dname}: TFRecord folder not found")
    if not directory.is_dir():
        raise InputError(f"{dname}: is a file, expected the folder of .tfrecords files")
    path = directory / f"{slide}.tfrecords"
    if path.is_file():
        return path
    try:
        entries = sorted(p.name for p in directory.iterdir())
    except OSError as exc:
        raise InputError(f"{dname}: cannot list the folder ({first_line(exc)})") from None
    records = [e for e in entries if e.endswith(".tfrecords")]
    shown = records or entries

    def brief(names: list[str], k: int = 5) -> str:
        text = ", ".join(quote(n) for n in names[:k])
        return text + (f", ... ({len(names) - k} more)" if len(names) > k else "")

    if records:
        what = f"{len(records)} .tfrecords file{'s' if len(records) != 1 else ''}: {brief(shown)}"
    elif entries:
        what = f"no .tfrecords files; it holds {brief(shown)}"
    else:
        what = "the folder is empty"
    if path.is_dir():
        what = f"{quote(path.name)} is a folder; " + what
    raise InputError(f"{dname}: no {quote(path.name)} for slide {quote(slide)} ({what})")
