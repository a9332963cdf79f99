"""The embedded bus's storage helpers."""

import sqlite3

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inferline.bus._sqlite_log import SqliteLog, decode_headers, encode_headers

headers = st.lists(st.tuples(st.text(max_size=20), st.binary(max_size=50)), max_size=8)


@given(headers)
def test_headers_round_trip_in_order_with_repeats(pairs):
    assert decode_headers(encode_headers(pairs)) == tuple(pairs)


def test_no_headers_store_nothing():
    assert encode_headers(()) is None
    assert decode_headers(None) == ()


def test_bounds_and_trim(tmp_path):
    log = SqliteLog(tmp_path / "bus.sqlite3")
    try:
        log.create_topic("t", 1)
        assert log.bounds("t", 0) == (0, 0)
        log.write([("t", 0, o, 0, None, None, b"x") for o in range(5)])
        assert log.bounds("t", 0) == (0, 5)
        log.trim([("t", 0, 3)])
        assert log.bounds("t", 0) == (3, 5)
        assert [m.offset for m in log.read("t", 0, 0, 10)] == [3, 4]
        assert [m.offset for m in log.read_last("t", 0, 1)] == [4]
    finally:
        log.close()


def test_a_newer_schema_is_refused(tmp_path):
    db = sqlite3.connect(tmp_path / "bus.sqlite3")
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(RuntimeError, match="newer inferline"):
        SqliteLog(tmp_path / "bus.sqlite3")
