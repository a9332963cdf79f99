"""Batcher and split_rows: a step's requests merged along the first dimension, sent at `size`
rows or after `windowMs`, and the model's row-by-row answer split back (reference b.8)."""

import numpy as np
import orjson
import pytest

from inferline.bus.base import TopicPartition
from inferline.dataflow.batching import (
    BATCH_HEADER,
    Batcher,
    BatchItem,
    batch_members,
    split_rows,
)
from inferline.dataflow.messages import TensorMessage
from inferline.protocol.types import Tensor

TP = TopicPartition("seldon.default.model.iris.outputs", 0)


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def item(
    key: str,
    rows: list,
    *,
    name: str = "predict",
    dtype=np.float32,
    offset: int = 0,
    request_id: str | None = None,
    extra: dict | None = None,
) -> BatchItem:
    tensors = [Tensor.from_numpy(name, np.asarray(rows, dtype=dtype))]
    for extra_name, value in (extra or {}).items():
        tensors.append(Tensor.from_numpy(extra_name, np.asarray(value)))
    headers = [("pipeline", b"p"), ("x-request-id", (request_id or key).encode())]
    return BatchItem(
        key.encode(),
        TensorMessage(tensors, id=f"id-{key}", parameters={"from": key}),
        headers,
        [(TP, offset)],
    )


def header(batch) -> list:
    (value,) = [v for k, v in batch.headers if k == BATCH_HEADER]
    return orjson.loads(value)


def test_flushes_once_size_rows_are_held():
    batcher = Batcher(size=4, clock=Clock())
    assert batcher.add(item("0.p.a", [[1, 2]])) == []
    assert batcher.add(item("0.p.b", [[3, 4], [5, 6]])) == []
    (batch,) = batcher.add(item("0.p.c", [[7, 8]]))
    (tensor,) = batch.message.tensors
    assert tensor.name == "predict"
    assert tensor.datatype == "FP32"
    assert tensor.shape == [4, 2]
    np.testing.assert_array_equal(tensor.data, [[1, 2], [3, 4], [5, 6], [7, 8]])
    assert batcher.held_items() == []
    assert batcher.held_positions() == []
    assert batcher.deadline() is None


def test_merged_request_goes_under_the_last_key_and_lists_every_member():
    batcher = Batcher(size=3, clock=Clock())
    assert batcher.add(item("0.p.a", [[1.0]], request_id="rid-a")) == []
    (batch,) = batcher.add(item("0.p.b", [[2.0], [3.0]], request_id="rid-b"))
    assert batch.key == b"0.p.b"
    assert batch.message.id == "id-0.p.b"
    assert batch.message.parameters == {"from": "0.p.b"}
    assert header(batch) == [["0.p.a", 1, "rid-a"], ["0.p.b", 2, "rid-b"]]
    assert batch_members(dict(batch.headers)[BATCH_HEADER]) == [
        (b"0.p.a", 1, "rid-a"),
        (b"0.p.b", 2, "rid-b"),
    ]
    # The last request's own headers travel with the batch.
    assert ("x-request-id", b"rid-b") in batch.headers
    assert ("pipeline", b"p") in batch.headers


def test_a_single_request_of_size_rows_goes_at_once():
    batcher = Batcher(size=2, clock=Clock())
    (batch,) = batcher.add(item("0.p.a", [[1.0], [2.0], [3.0]]))
    assert batch.message.tensors[0].shape == [3, 1]
    assert header(batch) == [["0.p.a", 3, "0.p.a"]]


def test_flushes_at_the_window_after_the_first_request():
    clock = Clock()
    batcher = Batcher(size=10, window_ms=200, clock=clock)
    assert batcher.deadline() is None
    assert batcher.expire() == []
    batcher.add(item("0.p.a", [[1.0]], offset=7))
    assert batcher.deadline() == pytest.approx(50.2)
    clock.now += 0.1
    batcher.add(item("0.p.b", [[2.0]], offset=8))
    assert batcher.deadline() == pytest.approx(50.2), "the window starts with the first request"
    assert batcher.held_positions() == [(TP, 7), (TP, 8)]
    clock.now = 50.199
    assert batcher.expire() == []
    clock.now = 50.2
    (batch,) = batcher.expire()
    np.testing.assert_array_equal(batch.message.tensors[0].data, [[1.0], [2.0]])
    assert batcher.held_positions() == []
    assert batcher.deadline() is None
    # The next request opens a new window.
    clock.now += 5
    batcher.add(item("0.p.c", [[3.0]]))
    assert batcher.deadline() == pytest.approx(clock.now + 0.2)


def test_without_a_window_a_partial_batch_waits():
    clock = Clock()
    batcher = Batcher(size=10, clock=clock)
    batcher.add(item("0.p.a", [[1.0]]))
    clock.now += 3600
    assert batcher.deadline() is None
    assert batcher.expire() == []
    assert len(batcher.held_items()) == 1


def test_each_layout_fills_a_batch_of_its_own():
    batcher = Batcher(size=2, clock=Clock())
    assert batcher.add(item("0.p.a", [[1.0, 2.0]])) == []
    # Another trailing shape, datatype, tensor name or set of tensors: none joins the held batch
    # or sends it early.
    assert batcher.add(item("0.p.b", [[1.0, 2.0, 3.0]])) == []
    assert batcher.add(item("0.p.c", [[1, 2, 3]], dtype=np.int64)) == []
    assert batcher.add(item("0.p.d", [[1, 2, 3]], dtype=np.int64, name="other")) == []
    assert (
        batcher.add(item("0.p.e", [[1, 2]], dtype=np.int64, name="other", extra={"x": [1]})) == []
    )
    assert [i.key for i in batcher.held_items()] == [
        b"0.p.a",
        b"0.p.b",
        b"0.p.c",
        b"0.p.d",
        b"0.p.e",
    ]
    # The second request of the first layout completes that batch, and only that one.
    (batch,) = batcher.add(item("0.p.f", [[5.0, 6.0]]))
    assert [m[0] for m in header(batch)] == ["0.p.a", "0.p.f"]
    np.testing.assert_array_equal(batch.message.tensors[0].data, [[1.0, 2.0], [5.0, 6.0]])
    assert [i.key for i in batcher.held_items()] == [b"0.p.b", b"0.p.c", b"0.p.d", b"0.p.e"]


def test_a_malformed_request_does_not_cut_a_batch_short():
    batcher = Batcher(size=3, clock=Clock())
    sent = batcher.add(item("0.p.a", [[1.0, 2.0]]))
    sent += batcher.add(item("0.p.bad", [[1.0, 2.0, 3.0]]))
    sent += batcher.add(item("0.p.b", [[3.0, 4.0]]))
    sent += batcher.add(item("0.p.c", [[5.0, 6.0]]))
    (batch,) = sent
    assert batch.message.tensors[0].shape == [3, 2]
    assert [m[0] for m in header(batch)] == ["0.p.a", "0.p.b", "0.p.c"]
    assert [i.key for i in batcher.held_items()] == [b"0.p.bad"]


def test_each_layout_has_its_own_window():
    clock = Clock()
    batcher = Batcher(size=10, window_ms=100, clock=clock)
    batcher.add(item("0.p.a", [[1.0]]))
    clock.now += 0.06
    batcher.add(item("0.p.b", [[1.0, 2.0]]))
    assert batcher.deadline() == pytest.approx(50.1)
    clock.now += 0.05
    (first,) = batcher.expire()
    assert first.key == b"0.p.a"
    assert batcher.deadline() == pytest.approx(50.16)
    clock.now += 0.06
    (second,) = batcher.expire()
    assert second.key == b"0.p.b"
    assert batcher.deadline() is None


def test_held_positions_cover_every_layout():
    batcher = Batcher(size=10, clock=Clock())
    batcher.add(item("0.p.a", [[1.0]], offset=4))
    batcher.add(item("0.p.b", [[1.0, 2.0]], offset=5))
    assert batcher.held_positions() == [(TP, 4), (TP, 5)]
    assert [b.key for b in batcher.flush()] == [b"0.p.a", b"0.p.b"]
    assert batcher.held_positions() == []


def test_compatible_requests_merge_every_tensor():
    batcher = Batcher(size=2, clock=Clock())
    batcher.add(item("0.p.a", [[1.0]], extra={"mask": [True]}))
    (batch,) = batcher.add(item("0.p.b", [[2.0]], extra={"mask": [False]}))
    assert [(t.name, t.datatype, t.shape) for t in batch.message.tensors] == [
        ("predict", "FP32", [2, 1]),
        ("mask", "BOOL", [2]),
    ]
    np.testing.assert_array_equal(batch.message.tensors[1].data, [True, False])


def test_a_request_of_another_layout_that_fills_a_batch_is_sent_at_once():
    batcher = Batcher(size=2, clock=Clock())
    batcher.add(item("0.p.a", [[1.0]]))
    sent = batcher.add(item("0.p.b", [[1.0, 2.0], [3.0, 4.0]]))
    assert [b.key for b in sent] == [b"0.p.b"], "the new request holds size rows"
    assert [i.key for i in batcher.held_items()] == [b"0.p.a"]


def test_scalar_tensors_go_alone_at_once_and_do_not_break_the_batcher():
    batcher = Batcher(size=2, clock=Clock())
    sent = batcher.add(item("0.p.a", 1.0))
    sent += batcher.add(item("0.p.b", 2.0))
    assert [b.key for b in sent] == [b"0.p.a", b"0.p.b"]
    assert batcher.add(item("0.p.c", [3.0])) == []
    (last,) = batcher.add(item("0.p.d", [4.0]))
    assert [b.message.tensors[0].shape for b in sent] == [[], []]
    assert [float(b.message.tensors[0].data.ravel()[0]) for b in sent] == [1.0, 2.0]
    np.testing.assert_array_equal(last.message.tensors[0].data, [3.0, 4.0])


def test_flush_of_nothing_is_nothing():
    assert Batcher(size=2, clock=Clock()).flush() == []


# --- split_rows -----------------------------------------------------------------------------


def response(**tensors) -> TensorMessage:
    return TensorMessage(
        [Tensor.from_numpy(name, np.asarray(value)) for name, value in tensors.items()],
        id="batch-id",
        parameters={"p": 1},
        model_name="iris_1",
    )


def test_split_rows_gives_each_request_its_rows():
    answer = response(
        predict=[[0], [1], [2], [3]], proba=[[0.1, 0.9], [0.2, 0.8], [0.3, 0.7], [1, 0]]
    )
    pieces = split_rows(answer, [1, 2, 1])
    assert pieces is not None
    assert [[t.shape for t in p.tensors] for p in pieces] == [
        [[1, 1], [1, 2]],
        [[2, 1], [2, 2]],
        [[1, 1], [1, 2]],
    ]
    np.testing.assert_array_equal(pieces[1].tensors[0].data, [[1], [2]])
    np.testing.assert_array_equal(pieces[2].tensors[1].data, [[1, 0]])
    assert {(p.id, p.model_name) for p in pieces} == {("batch-id", "iris_1")}
    assert [t.name for t in pieces[0].tensors] == ["predict", "proba"]
    assert [t.datatype for t in pieces[0].tensors] == [t.datatype for t in answer.tensors]


def test_split_rows_returns_none_when_the_answer_is_not_row_by_row():
    assert split_rows(response(score=[0.5]), [1, 2]) is None, "one row for three requests"
    assert split_rows(response(a=[1, 2, 3], b=[1]), [2, 1]) is None, "one output is not per row"
    assert split_rows(response(scalar=np.float32(3.0)), [1]) is None
    assert split_rows(TensorMessage([]), [1, 1]) is None


def test_merge_then_split_round_trips():
    batcher = Batcher(size=6, clock=Clock())
    originals = [[[1.0, 1.5]], [[2.0, 2.5], [3.0, 3.5]], [[4.0, 4.5]] * 3]
    sent = []
    for n, rows in enumerate(originals):
        sent += batcher.add(item(f"0.p.{n}", rows))
    (batch,) = sent
    members = batch_members(dict(batch.headers)[BATCH_HEADER])
    pieces = split_rows(batch.message, [rows for _, rows, _ in members])
    assert pieces is not None
    for piece, rows in zip(pieces, originals, strict=True):
        np.testing.assert_array_equal(piece.tensors[0].data, np.asarray(rows, dtype=np.float32))
