"""MXNet / insightface RecordIO (`.rec` + `.idx`) without MXNet.

The byte layout is dmlc-core's `recordio.h`:

    record := magic (uint32 0xCED7230A) | lrec (uint32) | payload | zero padding to 4 bytes
    lrec   := cflag << 29 | length          (little-endian; length < 2**29 bytes)

A payload holding the magic number at a 4-byte-aligned offset is split there into parts (the
magic itself is dropped): cflag 1 starts a multi-part record, 2 continues it, 3 ends it; 0 is a
whole record. Readers re-insert the magic between parts. The very first dmlc releases used the
magic 0x3ED7230A with a 30-bit length; the reader accepts those files too, the writer never
writes them.

A payload usually starts with insightface's image header `IRHeader` (struct `IfQQ`: flag, label,
id, id2, 24 bytes). `flag > 0` means `flag` float32 labels follow the header (and the `label`
field is 0); then come the image bytes (JPEG/PNG). In a training set, record 0's header with
`flag > 0` holds `[first identity key, end key]`: image keys are `1 .. first - 1`, and each key in
`[first, end)` is an identity record whose label is `[first image key, end image key)`. A file
without that header record is "flat": every key is an image.

The index file (`.idx`) has one `key<TAB>byte offset` line per record, as MXNet writes it.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmr.errors import DataError

MAGIC = 0xCED7230A
LEGACY_MAGIC = 0x3ED7230A  # dmlc-core before 2015-10: 30-bit length, 2-bit cflag
_MAGIC_BYTES = struct.pack("<I", MAGIC)
MAX_RECORD_BYTES = (1 << 29) - 1
IR_FORMAT = "<IfQQ"
IR_SIZE = struct.calcsize(IR_FORMAT)  # 24


@dataclass(frozen=True)
class IRHeader:
    """insightface's per-record header.

    flag: number of float32 labels stored after the header (0: the scalar `label` is used).
    label: the class as a float, or a float32 array of `flag` values.
    id, id2: free uint64 fields (MXNet's im2rec puts the record key in `id`).
    """

    flag: int
    label: float | np.ndarray
    id: int = 0
    id2: int = 0


def pack(header: IRHeader, payload: bytes = b"") -> bytes:
    """Serialise `header` (+ its label array) followed by `payload`, as `mx.recordio.pack`."""
    label = header.label
    if isinstance(label, (int, float, np.integer, np.floating)):
        head = struct.pack(IR_FORMAT, 0, float(label), header.id, header.id2)
        return head + payload
    labels = np.asarray(label, dtype="<f4").reshape(-1)
    head = struct.pack(IR_FORMAT, labels.size, 0.0, header.id, header.id2)
    return head + labels.tobytes() + payload


def unpack(record: bytes) -> tuple[IRHeader, bytes]:
    """Split a record into its `IRHeader` and payload (the inverse of `pack`)."""
    if len(record) < IR_SIZE:
        raise DataError(f"record of {len(record)} bytes is shorter than an IRHeader ({IR_SIZE})")
    flag, label, id_, id2 = struct.unpack_from(IR_FORMAT, record)
    body = record[IR_SIZE:]
    if flag > 0:
        if len(body) < 4 * flag:
            raise DataError(f"record header promises {flag} labels but holds {len(body) // 4}")
        labels = np.frombuffer(body, dtype="<f4", count=flag).astype(np.float32)
        return IRHeader(flag, labels, id_, id2), body[4 * flag :]
    return IRHeader(0, float(label), id_, id2), body


def encode_record(payload: bytes) -> bytes:
    """The bytes one payload occupies in a `.rec` file (parts split at aligned magic numbers)."""
    size = len(payload)
    if size > MAX_RECORD_BYTES:
        raise DataError(f"a RecordIO record holds at most {MAX_RECORD_BYTES} bytes, got {size}")
    out = bytearray()
    start = 0
    # Only 4-byte-aligned occurrences count: readers scan for the magic at aligned offsets.
    for i in range(0, size - size % 4, 4):
        if payload[i : i + 4] == _MAGIC_BYTES:
            cflag = 1 if start == 0 else 2
            out += _MAGIC_BYTES + struct.pack("<I", (cflag << 29) | (i - start))
            out += payload[start:i]
            start = i + 4
    cflag = 3 if start else 0
    out += _MAGIC_BYTES + struct.pack("<I", (cflag << 29) | (size - start))
    out += payload[start:]
    out += b"\0" * (-size % 4)
    return bytes(out)


def _reader(handle):
    """read(n, offset) -> bytes over an int file descriptor (os.pread: no shared file
    position, so threads can read one file at once) or a file object."""
    if isinstance(handle, int):
        return lambda n, offset: os.pread(handle, n, offset)

    def read(n: int, offset: int) -> bytes:
        handle.seek(offset)
        return handle.read(n)

    return read


def read_record_at(handle, offset: int, path: Path) -> tuple[bytes, int]:
    """Read the (maybe multi-part) record starting at `offset`: (payload, next offset).

    `handle` is an open binary file or an OS file descriptor. Raises EOFError at the end.
    """
    read = _reader(handle)
    parts: list[bytes] = []
    position = offset
    while True:
        head = read(8, position)
        if not head and not parts:
            raise EOFError
        if len(head) != 8:
            raise DataError(f"{path}: truncated record header at byte {position}")
        magic, lrec = struct.unpack("<II", head)
        if magic == MAGIC:
            cflag, length = lrec >> 29, lrec & MAX_RECORD_BYTES
        elif magic == LEGACY_MAGIC:
            cflag, length = lrec >> 30, lrec & ((1 << 30) - 1)
        else:
            raise DataError(
                f"{path}: no RecordIO record at byte {position} (magic {magic:#010x}); "
                "is the .idx file the one written with this .rec?"
            )
        padded = length + (-length % 4)
        data = read(padded, position + 8)
        if len(data) != padded:
            raise DataError(f"{path}: record at byte {position} is truncated ({padded} bytes)")
        parts.append(data[:length])
        position += 8 + padded
        if cflag in (0, 3):
            break
        if cflag not in (1, 2):
            raise DataError(f"{path}: invalid continuation flag {cflag} at byte {position}")
    return _MAGIC_BYTES.join(parts), position


def read_index(path: str | os.PathLike) -> dict[int, int]:
    """Parse an `.idx` file into {key: byte offset}."""
    path = Path(path)
    index: dict[int, int] = {}
    try:
        text = path.read_text()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the RecordIO index ({exc})") from exc
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        try:
            index[int(parts[0])] = int(parts[1])
        except (ValueError, IndexError) as exc:
            raise DataError(f"{path}: line {number} is not 'key<TAB>offset': {line!r}") from exc
    return index


class RecordWriter:
    """Append records to a `.rec` file and its `.idx` index (MXNet's `MXIndexedRecordIO('w')`).

        with RecordWriter("train.rec") as writer:       # writes train.rec and train.idx
            writer.write(0, pack(IRHeader(0, 3.0), jpeg_bytes))
    """

    def __init__(self, rec_path: str | os.PathLike, idx_path: str | os.PathLike | None = None):
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path else self.rec_path.with_suffix(".idx")
        self.rec_path.parent.mkdir(parents=True, exist_ok=True)
        self._rec = open(self.rec_path, "wb")  # noqa: SIM115 - closed in close()
        self._idx = open(self.idx_path, "w")  # noqa: SIM115
        self._offset = 0
        self.keys: list[int] = []

    def write(self, key: int, payload: bytes) -> None:
        encoded = encode_record(payload)
        self._idx.write(f"{int(key)}\t{self._offset}\n")
        self._rec.write(encoded)
        self._offset += len(encoded)
        self.keys.append(int(key))

    def close(self) -> None:
        self._rec.close()
        self._idx.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RecordReader:
    """Random access to the records of a `.rec` file through its `.idx` index.

    Safe in threads (positional reads) and in DataLoader worker processes (each process opens
    its own file descriptor on first use).
    """

    def __init__(self, rec_path: str | os.PathLike, idx_path: str | os.PathLike | None = None):
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path else self.rec_path.with_suffix(".idx")
        for needed in (self.rec_path, self.idx_path):
            if not needed.is_file():
                raise DataError(f"{needed}: not found (a RecordIO set needs both .rec and .idx)")
        self.index = read_index(self.idx_path)
        self.keys = sorted(self.index)
        self._handle = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.index)

    def _file(self) -> int:
        if self._handle is None or self._pid != os.getpid():
            self._handle = os.open(self.rec_path, os.O_RDONLY)  # one per process
            self._pid = os.getpid()
        return self._handle

    def read(self, key: int) -> bytes:
        """The payload of record `key`."""
        try:
            offset = self.index[int(key)]
        except KeyError:
            raise DataError(f"{self.rec_path}: no record with key {key}") from None
        try:
            payload, _ = read_record_at(self._file(), offset, self.rec_path)
        except EOFError:
            raise DataError(f"{self.rec_path}: key {key} points past the end of the file") from None
        return payload

    def read_header(self, key: int) -> tuple[IRHeader, bytes]:
        return unpack(self.read(key))

    def read_label(self, key: int) -> int:
        """The class of image record `key` (its first label), reading only the header bytes.

        MS1M holds 5.2M records: reading 36 bytes instead of the whole JPEG keeps opening it fast.
        """
        head = os.pread(self._file(), 8 + IR_SIZE + 4, self.index[int(key)])
        fast = len(head) == 8 + IR_SIZE + 4
        if fast:
            magic, lrec = struct.unpack_from("<II", head)
            # The first part must hold the header and one label (always true unless split early).
            fast = magic == MAGIC and (lrec & MAX_RECORD_BYTES) >= IR_SIZE + 4
        if not fast:
            header, _ = self.read_header(key)  # short or unusual record: the slow, checked path
        else:
            flag, label, _, _ = struct.unpack_from(IR_FORMAT, head, 8)
            if flag > 0:
                label = struct.unpack_from("<f", head, 8 + IR_SIZE)[0]
            header = IRHeader(0, label)
        value = header.label if header.flag == 0 else np.asarray(header.label).reshape(-1)[0]
        return int(round(float(value)))

    def __getstate__(self) -> dict:  # picklable for worker processes: drop the open handle
        state = dict(self.__dict__)
        state["_handle"], state["_pid"] = None, -1
        return state

    def close(self) -> None:
        if self._handle is not None and self._pid == os.getpid():
            os.close(self._handle)
        self._handle = None


def iter_records(rec_path: str | os.PathLike) -> Iterator[tuple[int, bytes]]:
    """Every record of a `.rec` file in file order as (byte offset, payload); needs no index."""
    path = Path(rec_path)
    with open(path, "rb") as handle:
        offset = 0
        while True:
            try:
                payload, next_offset = read_record_at(handle, offset, path)
            except EOFError:
                return
            yield offset, payload
            offset = next_offset


def write_image_set(
    rec_path: str | os.PathLike,
    images: Sequence[bytes],
    labels: Sequence[int],
) -> None:
    """Write encoded images as an insightface training set (header record 0, identity records).

    `labels[i]` is the class of `images[i]`; images must be sorted by label with classes
    0..C-1 contiguous, except that trailing images may carry label -1 (no class: used only for
    distillation; insightface's own loader would need them removed). Image keys are 1..N in order;
    identity records follow at keys N+1..N+C with the [first, end) image-key range of each class.
    """
    labels = [int(v) for v in labels]
    if len(labels) != len(images):
        raise ValueError("images and labels differ in length")
    labelled = [v for v in labels if v >= 0]
    if labelled != sorted(labelled) or any(v >= 0 for v in labels[len(labelled) :]):
        raise ValueError("images must be sorted by label, with label -1 images last")
    num_classes = (max(labelled) + 1) if labelled else 0
    if labelled and sorted(set(labelled)) != list(range(num_classes)):
        raise ValueError("class labels must be contiguous 0..C-1")
    n = len(images)
    first_identity = n + 1
    ranges: list[tuple[int, int]] = []
    key = 1
    for cls in range(num_classes):
        start = key
        while key <= n and labels[key - 1] == cls:
            key += 1
        ranges.append((start, key))
    with RecordWriter(rec_path) as writer:
        header0 = IRHeader(2, np.array([first_identity, first_identity + num_classes], np.float32))
        writer.write(0, pack(header0))
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            writer.write(i + 1, pack(IRHeader(0, float(label), i + 1, 0), image))
        for cls, (start, end) in enumerate(ranges):
            identity = IRHeader(2, np.array([start, end], np.float32), first_identity + cls, 0)
            writer.write(first_identity + cls, pack(identity))


@dataclass
class ImageRecords:
    """The image records of a RecordIO training set: keys and integer class labels."""

    reader: RecordReader
    keys: np.ndarray  # (N,) int64 record keys of the images
    labels: np.ndarray  # (N,) int64 class per image (-1: no class)
    layout: str  # "header" (record 0 lists identity ranges) or "flat"

    def payload(self, i: int) -> bytes:
        """The encoded image bytes of image `i` (0-based position, not the key)."""
        _, body = self.reader.read_header(int(self.keys[i]))
        return body


def read_image_set(
    rec_path: str | os.PathLike, idx_path: str | os.PathLike | None = None
) -> ImageRecords:
    """Open an insightface-style `.rec` as a list of images with labels.

    With the header layout (record 0's flag > 0) images are keys 1 .. label[0]-1 and their
    classes are read from each image header; flat files take every key as an image.
    float32 labels must be whole numbers (the first of a label array is the class).
    """
    reader = RecordReader(rec_path, idx_path)
    if not reader.keys:
        raise DataError(f"{reader.rec_path}: the RecordIO file holds no records")
    layout = "flat"
    keys = reader.keys
    if 0 in reader.index:
        header, _ = reader.read_header(0)
        if header.flag > 0:
            layout = "header"
            first_identity = int(np.asarray(header.label).reshape(-1)[0])
            keys = [k for k in reader.keys if 1 <= k < first_identity]
    labels = np.empty(len(keys), dtype=np.int64)
    for i, key in enumerate(keys):
        labels[i] = reader.read_label(key)
    return ImageRecords(reader, np.asarray(keys, dtype=np.int64), labels, layout)
