"""RecordIO: our writer and reader agree with each other and with dmlc-core's byte layout."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from fmr.data.recordio import (
    IR_SIZE,
    MAGIC,
    IRHeader,
    RecordReader,
    RecordWriter,
    encode_record,
    iter_records,
    pack,
    read_image_set,
    unpack,
    write_image_set,
)
from fmr.errors import DataError

MAGIC_BYTES = struct.pack("<I", MAGIC)


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert ok
    return encoded.tobytes()


def test_single_record_layout_matches_dmlc():
    payload = b"abcdefg"  # 7 bytes: one byte of padding
    encoded = encode_record(payload)
    magic, lrec = struct.unpack_from("<II", encoded)
    assert magic == MAGIC
    assert lrec >> 29 == 0 and lrec & ((1 << 29) - 1) == 7
    assert encoded[8:15] == payload and encoded[15:] == b"\0"
    assert len(encoded) % 4 == 0


def test_multi_part_record_splits_at_aligned_magic_and_round_trips(tmp_path):
    # The magic at offsets 4 and 12 (aligned) splits the record; at 17 (unaligned) it does not.
    payload = b"head" + MAGIC_BYTES + b"mid1" + MAGIC_BYTES + b"x" + MAGIC_BYTES + b"tail!"
    encoded = encode_record(payload)
    flags, lengths, position = [], [], 0
    while position < len(encoded):
        magic, lrec = struct.unpack_from("<II", encoded, position)
        assert magic == MAGIC
        flags.append(lrec >> 29)
        lengths.append(lrec & ((1 << 29) - 1))
        position += 8 + lengths[-1] + (-lengths[-1] % 4)
    assert flags == [1, 2, 3]  # start, middle, end
    assert lengths == [4, 4, len(payload) - 16]

    rec = tmp_path / "multi.rec"
    with RecordWriter(rec) as writer:
        writer.write(0, b"first")
        writer.write(1, payload)
        writer.write(2, MAGIC_BYTES)  # a payload that is only the magic: two empty parts
        writer.write(3, b"last")
    reader = RecordReader(rec)
    assert reader.read(1) == payload
    assert reader.read(2) == MAGIC_BYTES
    assert [reader.read(k) for k in (0, 3)] == [b"first", b"last"]
    assert [p for _, p in iter_records(rec)] == [b"first", payload, MAGIC_BYTES, b"last"]


def test_irheader_pack_unpack_scalar_and_array_labels():
    header, body = unpack(pack(IRHeader(0, 17.0, 5, 9), b"jpeg"))
    assert (header.flag, header.label, header.id, header.id2, body) == (0, 17.0, 5, 9, b"jpeg")

    record = pack(IRHeader(2, np.array([3.0, 8.0], np.float32), 1, 0), b"xyz")
    assert len(record) == IR_SIZE + 8 + 3
    assert struct.unpack_from("<IfQQ", record) == (2, 0.0, 1, 0)
    header, body = unpack(record)
    assert header.flag == 2 and body == b"xyz"
    np.testing.assert_array_equal(header.label, [3.0, 8.0])


def test_index_file_is_key_tab_offset(tmp_path):
    rec = tmp_path / "train.rec"
    payloads = [b"a" * 5, b"b" * 8, b"c"]
    with RecordWriter(rec) as writer:
        for key, payload in enumerate(payloads):
            writer.write(key, payload)
    lines = (tmp_path / "train.idx").read_text().splitlines()
    assert lines == ["0\t0", "1\t16", "2\t32"]  # 8-byte head + padded payloads
    assert rec.stat().st_size == 16 + 16 + 12


def test_image_set_header_layout_round_trip(tmp_path):
    images = [_jpeg(i) for i in range(7)]
    labels = [0, 0, 0, 1, 1, 2, -1]  # last: a distillation-only image without a class
    rec = tmp_path / "train.rec"
    write_image_set(rec, images, labels)

    reader = RecordReader(rec)
    header0, _ = reader.read_header(0)
    assert header0.flag == 2
    np.testing.assert_array_equal(header0.label, [8, 11])  # identities at keys 8, 9, 10
    ranges = [tuple(reader.read_header(k)[0].label.astype(int)) for k in (8, 9, 10)]
    assert ranges == [(1, 4), (4, 6), (6, 7)]

    records = read_image_set(rec)
    assert records.layout == "header"
    assert records.keys.tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert records.labels.tolist() == labels
    for i, expected in enumerate(images):
        assert records.payload(i) == expected
        decoded = cv2.imdecode(np.frombuffer(records.payload(i), np.uint8), cv2.IMREAD_COLOR)
        assert decoded.shape == (112, 112, 3)


def test_concurrent_reads_from_threads(tmp_path):
    # Training decodes a pack with a thread pool over one reader: reads must not interleave.
    import concurrent.futures

    images = [_jpeg(i) for i in range(40)]
    write_image_set(tmp_path / "train.rec", images, [i // 4 for i in range(40)])
    records = read_image_set(tmp_path / "train.rec")
    order = np.random.default_rng(0).integers(0, 40, 2000)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        payloads = list(pool.map(records.payload, order))
    assert all(p == images[i] for p, i in zip(payloads, order, strict=True))


def test_flat_file_without_header_record(tmp_path):
    rec = tmp_path / "flat.rec"
    with RecordWriter(rec) as writer:
        for key, label in [(10, 1.0), (11, 0.0), (12, 1.0)]:
            writer.write(key, pack(IRHeader(0, label, key, 0), b"img"))
    # A label array record: the first value is the class.
    with RecordWriter(tmp_path / "arr.rec") as writer:
        writer.write(0, pack(IRHeader(0, 4.0), b"a"))  # key 0 with flag 0: not a header record
        writer.write(1, pack(IRHeader(2, np.array([3.0, 0.5], np.float32)), b"b"))
    records = read_image_set(rec)
    assert records.layout == "flat" and records.labels.tolist() == [1, 0, 1]
    arrays = read_image_set(tmp_path / "arr.rec")
    assert arrays.layout == "flat" and arrays.labels.tolist() == [4, 3]


def test_reader_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match=r"missing\.rec: not found"):
        RecordReader(tmp_path / "missing.rec")
    rec = tmp_path / "bad.rec"
    rec.write_bytes(b"not a record file at all")
    (tmp_path / "bad.idx").write_text("0\t0\n")
    with pytest.raises(DataError, match=r"bad\.rec.*no RecordIO record"):
        RecordReader(rec).read(0)
    (tmp_path / "bad.idx").write_text("zero\tnothing\n")
    with pytest.raises(DataError, match=r"bad\.idx: line 1"):
        RecordReader(rec)


def test_writer_refuses_unsorted_labels(tmp_path):
    with pytest.raises(ValueError, match="sorted"):
        write_image_set(tmp_path / "x.rec", [b"a", b"b"], [1, 0])
