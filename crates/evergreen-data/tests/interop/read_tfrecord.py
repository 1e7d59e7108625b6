#!/usr/bin/env python3
"""Reads a TFRecord file of tf.train.Example records with a real third-party reader and checks
it against an expected JSON file. Used by crates/evergreen-data/tests/tfrecord_python.rs.

    read_tfrecord.py --check            print the backend that would be used; exit 2 if none
    read_tfrecord.py FILE EXPECTED.json  check FILE; print a JSON summary; exit 1 on mismatch

Backends, in order of preference:

- ``tensorflow``: ``tf.data.TFRecordDataset`` (verifies both CRCs of every record, reads gzip
  with ``compression_type="GZIP"``) and ``tf.train.Example``.
- ``tfrecord`` (PyPI ``tfrecord``, which brings ``numpy``, ``crc32c`` and ``protobuf``): its
  ``tfrecord_iterator`` frames the records and its generated ``example_pb2.Example`` (Google's
  protobuf runtime) parses them. That iterator does not check CRCs, so this script also walks
  the framing itself and checks both CRCs of every record with the package's own
  ``TFRecordWriter.masked_crc`` (CRC-32C from the ``crc32c`` package).

Gzip is detected from the magic bytes ``1f 8b``.

EXPECTED.json: ``{"records": [{name: feature, ...}, ...]}`` where a feature is one of
``{"bytes_b64": [base64, ...]}``, ``{"float": [number or "nan"/"inf"/"-inf", ...]}`` (float32
values; compared bit for bit, any NaN matching any NaN), ``{"int64": ["decimal", ...]}`` or
``{"none": true}`` (a Feature with no kind set). Every record must have exactly the expected
feature names.
"""

import base64
import gzip
import json
import math
import struct
import sys


def backend():
    try:
        import tensorflow  # noqa: F401

        return "tensorflow"
    except ImportError:
        pass
    try:
        import tfrecord  # noqa: F401
        from tfrecord import example_pb2  # noqa: F401

        return "tfrecord"
    except ImportError:
        return None


def is_gzip(path):
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def records_tensorflow(path, gz):
    import tensorflow as tf

    ds = tf.data.TFRecordDataset([path], compression_type="GZIP" if gz else "")
    for raw in ds:
        yield tf.train.Example.FromString(raw.numpy())


def check_crcs(path, gz):
    """Walks the framing and checks both masked CRCs of every record; returns the count."""
    from tfrecord.writer import TFRecordWriter

    opener = gzip.open if gz else open
    with opener(path, "rb") as f:
        data = f.read()
    pos, n = 0, 0
    while pos < len(data):
        if pos + 12 > len(data):
            raise AssertionError(f"record {n + 1} at byte {pos}: truncated header")
        length_bytes = data[pos : pos + 8]
        (length,) = struct.unpack("<Q", length_bytes)
        if data[pos + 8 : pos + 12] != TFRecordWriter.masked_crc(length_bytes):
            raise AssertionError(f"record {n + 1} at byte {pos}: length CRC mismatch")
        start, end = pos + 12, pos + 12 + length
        if end + 4 > len(data):
            raise AssertionError(f"record {n + 1} at byte {pos}: truncated payload")
        if data[end : end + 4] != TFRecordWriter.masked_crc(data[start:end]):
            raise AssertionError(f"record {n + 1} at byte {pos}: data CRC mismatch")
        pos, n = end + 4, n + 1
    return n


def records_tfrecord(path, gz):
    from tfrecord import example_pb2
    from tfrecord.reader import tfrecord_iterator

    for raw in tfrecord_iterator(path, compression_type="gzip" if gz else None):
        yield example_pb2.Example.FromString(bytes(raw))


def f32_bits(x):
    return struct.pack("<f", x)


def same_float(got, want):
    want = float(want)
    if math.isnan(want):
        return math.isnan(got)
    return f32_bits(got) == f32_bits(want)


def check_feature(where, feature, want):
    kind = feature.WhichOneof("kind")
    if "none" in want:
        if kind is not None:
            raise AssertionError(f"{where}: expected no kind, got {kind}")
        return 0
    if "bytes_b64" in want:
        exp = [base64.b64decode(v) for v in want["bytes_b64"]]
        if kind != "bytes_list" or list(feature.bytes_list.value) != exp:
            raise AssertionError(f"{where}: expected bytes {exp!r}, got {kind} {feature!r}")
        return len(exp)
    if "float" in want:
        exp = want["float"]
        got = list(feature.float_list.value)
        if kind != "float_list" or len(got) != len(exp) or not all(
            same_float(g, w) for g, w in zip(got, exp)
        ):
            raise AssertionError(f"{where}: expected floats {exp!r}, got {kind} {got!r}")
        return len(exp)
    if "int64" in want:
        exp = [int(v) for v in want["int64"]]
        if kind != "int64_list" or list(feature.int64_list.value) != exp:
            raise AssertionError(f"{where}: expected int64 {exp!r}, got {kind} {feature!r}")
        return len(exp)
    raise AssertionError(f"{where}: bad expectation {want!r}")


def main(argv):
    which = backend()
    if len(argv) == 2 and argv[1] == "--check":
        if which is None:
            print("neither tensorflow nor tfrecord is importable (pip install tfrecord)")
            return 2
        if which == "tensorflow":
            import tensorflow as tf

            print(f"tensorflow {tf.__version__}")
        else:
            from importlib.metadata import version

            print(f"tfrecord {version('tfrecord')}")
        return 0
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    if which is None:
        print("neither tensorflow nor tfrecord is importable", file=sys.stderr)
        return 2
    path, expected_path = argv[1], argv[2]
    with open(expected_path) as f:
        expected = json.load(f)["records"]
    gz = is_gzip(path)
    crc_checked = None
    if which == "tensorflow":
        examples = list(records_tensorflow(path, gz))
    else:
        crc_checked = check_crcs(path, gz)
        examples = list(records_tfrecord(path, gz))
        if crc_checked != len(examples):
            raise AssertionError(f"framing: {crc_checked} records by CRC walk, {len(examples)} read")
    if len(examples) != len(expected):
        raise AssertionError(f"expected {len(expected)} records, read {len(examples)}")
    values = 0
    for i, (ex, want) in enumerate(zip(examples, expected), start=1):
        got_names = set(ex.features.feature.keys())
        if got_names != set(want.keys()):
            raise AssertionError(f"record {i}: features {sorted(got_names)} != {sorted(want)}")
        for name, w in want.items():
            values += check_feature(f"record {i} feature {name!r}", ex.features.feature[name], w)
    print(
        json.dumps(
            {
                "backend": which,
                "gzip": gz,
                "records": len(examples),
                "values": values,
                "crc_checked": crc_checked if crc_checked is not None else len(examples),
            }
        )
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except AssertionError as e:
        print(f"MISMATCH: {e}", file=sys.stderr)
        sys.exit(1)
