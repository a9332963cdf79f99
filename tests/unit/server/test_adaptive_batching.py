import asyncio
import json
import time

import numpy as np
import pytest
from prometheus_client import REGISTRY

from inferline.protocol.errors import BadRequest, InferenceError, ModelLoadError, ModelNotReady
from inferline.protocol.types import InferenceRequest, InferenceResponse, RequestedOutput, Tensor
from inferline.runtimes.base import Runtime
from inferline.runtimes.settings import ModelSettings
from inferline.server.batching import AdaptiveBatcher, batcher_for
from inferline.server.dataplane import DataPlane
from inferline.server.repository import ModelRepository


class Recorder(Runtime):
    """Doubles its input row by row and remembers every request it was called with."""

    def __init__(self, name: str = "recorder"):
        super().__init__(ModelSettings(name=name, version="1"))
        self.calls: list[tuple[float, InferenceRequest]] = []

    async def predict(self, request: InferenceRequest) -> InferenceResponse:
        self.calls.append((time.monotonic(), request))
        x = request.inputs[0].data
        if (x < 0).any():
            raise ValueError("negative rows are not allowed")
        outputs = {"doubled": x * 2, "row_sum": x.sum(axis=1, keepdims=True)}
        names = [o.name for o in request.outputs] if request.outputs else list(outputs)
        unknown = [n for n in names if n not in outputs]
        if unknown:
            raise BadRequest(f"no output '{unknown[0]}'")
        return InferenceResponse(
            model_name="ignored",
            outputs=[
                Tensor.from_numpy(n, outputs[n], parameters={"content_type": "np"}) for n in names
            ],
            parameters={"seen": dict(request.parameters)},
        )


class Summary(Recorder):
    """Answers one row for the whole request, whatever its size (like a drift test)."""

    async def predict(self, request: InferenceRequest) -> InferenceResponse:
        self.calls.append((time.monotonic(), request))
        rows = request.inputs[0].data.shape[0]
        return InferenceResponse("ignored", [Tensor.from_numpy("rows", np.array([rows]))])


def rows_request(values, request_id=None, outputs=None, **parameters) -> InferenceRequest:
    data = np.asarray(values, dtype=np.float32)
    return InferenceRequest(
        inputs=[Tensor.from_numpy("x", data)],
        id=request_id,
        parameters=parameters,
        outputs=[RequestedOutput(name) for name in outputs] if outputs else None,
    )


def batch_size_count(name: str) -> float:
    labels = {"model": name, "version": "1"}
    return REGISTRY.get_sample_value("model_infer_batch_size_count", labels) or 0.0


def batch_size_sum(name: str) -> float:
    labels = {"model": name, "version": "1"}
    return REGISTRY.get_sample_value("model_infer_batch_size_sum", labels) or 0.0


async def test_each_caller_gets_exactly_its_own_rows():
    runtime = Recorder("rows")
    batcher = AdaptiveBatcher(runtime, max_batch_size=3, max_batch_time=30)
    one = [[1.0, 2.0]]
    three = [[3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]
    two = [[9.0, 10.0], [11.0, 12.0]]
    answers = await asyncio.wait_for(
        asyncio.gather(*(batcher.predict(rows_request(v)) for v in (one, three, two))), 10
    )
    assert len(runtime.calls) == 1
    merged = runtime.calls[0][1].inputs[0]
    assert merged.shape == [6, 2]
    for values, answer in zip((one, three, two), answers, strict=True):
        doubled = answer.output("doubled")
        assert doubled.shape == [len(values), 2]
        assert doubled.data.tolist() == (np.asarray(values) * 2).tolist()
        assert doubled.parameters == {"content_type": "np"}
        assert answer.output("row_sum").data.ravel().tolist() == [sum(r) for r in values]


async def test_each_caller_gets_only_the_outputs_it_asked_for():
    runtime = Recorder()
    batcher = AdaptiveBatcher(runtime, max_batch_size=3, max_batch_time=30)
    asks = (["doubled"], ["row_sum"], ["row_sum", "doubled"])
    answers = await asyncio.wait_for(
        asyncio.gather(*(batcher.predict(rows_request([[1.0, 2.0]], outputs=a)) for a in asks)),
        10,
    )
    # One call, asked for the union of the outputs.
    ((_, merged),) = runtime.calls
    assert sorted(o.name for o in merged.outputs) == ["doubled", "row_sum"]
    for asked, answer in zip(asks, answers, strict=True):
        assert sorted(o.name for o in answer.outputs) == sorted(asked)


async def test_a_bad_request_fails_alone():
    runtime = Recorder()
    batcher = AdaptiveBatcher(runtime, max_batch_size=3, max_batch_time=30)
    good_1, bad, good_2 = [[1.0, 1.0]], [[-1.0, 0.0]], [[2.0, 2.0], [3.0, 3.0]]
    answers = await asyncio.wait_for(
        asyncio.gather(
            *(batcher.predict(rows_request(v)) for v in (good_1, bad, good_2)),
            return_exceptions=True,
        ),
        10,
    )
    assert answers[0].output("doubled").data.tolist() == [[2.0, 2.0]]
    assert isinstance(answers[1], ValueError)
    assert "negative rows" in str(answers[1])
    assert answers[2].output("doubled").data.tolist() == [[4.0, 4.0], [6.0, 6.0]]
    # The merged call, then each request on its own.
    assert [c[1].inputs[0].shape[0] for c in runtime.calls] == [4, 1, 1, 2]


async def test_an_unknown_output_fails_only_the_caller_who_asked_for_it():
    runtime = Recorder()
    batcher = AdaptiveBatcher(runtime, max_batch_size=2, max_batch_time=30)
    good, bad = await asyncio.wait_for(
        asyncio.gather(
            batcher.predict(rows_request([[1.0, 2.0]], outputs=["doubled"])),
            batcher.predict(rows_request([[1.0, 2.0]], outputs=["nope"])),
            return_exceptions=True,
        ),
        10,
    )
    assert [o.name for o in good.outputs] == ["doubled"]
    assert isinstance(bad, BadRequest)
    assert "nope" in bad.message


async def test_the_time_budget_runs_from_the_first_arrival():
    runtime = Recorder()
    budget = 1.0
    batcher = AdaptiveBatcher(runtime, max_batch_size=100, max_batch_time=budget)
    first_arrival = time.monotonic()
    first = asyncio.create_task(batcher.predict(rows_request([[1.0, 1.0]])))
    await asyncio.sleep(0.6)
    second = asyncio.create_task(batcher.predict(rows_request([[2.0, 2.0]])))
    await asyncio.wait_for(asyncio.gather(first, second), 10)
    ((sent_at, merged),) = runtime.calls
    assert merged.inputs[0].shape == [2, 2]
    waited = sent_at - first_arrival
    # Not before the budget, and well before the budget counted from the second arrival (1.6 s).
    assert budget - 0.05 <= waited < 1.5


async def test_a_full_batch_goes_before_the_budget():
    runtime = Recorder()
    batcher = AdaptiveBatcher(runtime, max_batch_size=4, max_batch_time=60)
    started = time.monotonic()
    await asyncio.wait_for(
        asyncio.gather(*(batcher.predict(rows_request([[float(i), 0.0]])) for i in range(4))), 10
    )
    assert time.monotonic() - started < 10
    assert len(runtime.calls) == 1
    # The next request opens a new batch, which waits for company.
    fifth = asyncio.create_task(batcher.predict(rows_request([[5.0, 0.0]])))
    await asyncio.sleep(0.2)
    assert not fifth.done()
    fifth.cancel()
    await batcher.close()


async def test_requests_that_cannot_be_merged_go_in_their_own_batches():
    runtime = Recorder()
    batcher = AdaptiveBatcher(runtime, max_batch_size=2, max_batch_time=0.2)
    requests = [
        rows_request([[1.0, 2.0]]),
        rows_request([[1.0, 2.0, 3.0]]),  # another row width
        rows_request([[1.0, 2.0]], content_type="np"),  # other request parameters
        rows_request([[1.0, 2.0]], outputs=["doubled"]),  # names outputs, the others take all
        rows_request([[3.0, 4.0]]),
    ]
    answers = await asyncio.wait_for(asyncio.gather(*map(batcher.predict, requests)), 10)
    shapes = sorted(tuple(c[1].inputs[0].shape) for c in runtime.calls)
    assert shapes == [(1, 2), (1, 2), (1, 3), (2, 2)]
    assert answers[1].output("doubled").data.tolist() == [[2.0, 4.0, 6.0]]
    assert answers[2].parameters == {"seen": {"content_type": "np"}}
    assert answers[4].output("doubled").data.tolist() == [[6.0, 8.0]]


async def test_an_answer_that_is_not_one_row_per_row_is_not_split():
    runtime = Summary("summary")
    batcher = AdaptiveBatcher(runtime, max_batch_size=2, max_batch_time=30)
    small, large = await asyncio.wait_for(
        asyncio.gather(
            batcher.predict(rows_request([[1.0, 1.0]])),
            batcher.predict(rows_request([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])),
        ),
        10,
    )
    # Each caller gets the answer it would have had alone...
    assert small.output("rows").data.tolist() == [1]
    assert large.output("rows").data.tolist() == [3]
    # ... and batching is off from then on: the next request does not wait for company.
    await asyncio.wait_for(batcher.predict(rows_request([[1.0, 1.0]])), 5)


async def test_every_batch_size_is_observed():
    runtime = Recorder("observed")
    batcher = AdaptiveBatcher(runtime, max_batch_size=3, max_batch_time=30)
    count, total = batch_size_count("observed"), batch_size_sum("observed")
    await asyncio.wait_for(
        asyncio.gather(*(batcher.predict(rows_request([[1.0, 1.0]])) for _ in range(3))), 10
    )
    assert batch_size_count("observed") == count + 1
    assert batch_size_sum("observed") == total + 3


async def test_closing_answers_waiting_callers_and_refuses_new_ones():
    runtime = Recorder()
    batcher = AdaptiveBatcher(runtime, max_batch_size=10, max_batch_time=60)
    waiting = [asyncio.create_task(batcher.predict(rows_request([[1.0, 1.0]]))) for _ in range(3)]
    await asyncio.sleep(0.05)
    await asyncio.wait_for(batcher.close(), 10)
    assert all(task.done() for task in waiting)
    assert [t.result().output("doubled").data.tolist() for t in waiting] == [[[2.0, 2.0]]] * 3
    with pytest.raises(ModelNotReady, match="unloading"):
        await batcher.predict(rows_request([[1.0, 1.0]]))


async def test_a_caller_that_gave_up_is_left_out_of_the_batch():
    runtime = Recorder()
    batcher = AdaptiveBatcher(runtime, max_batch_size=10, max_batch_time=0.2)
    gone = asyncio.create_task(batcher.predict(rows_request([[7.0, 7.0]])))
    stays = asyncio.create_task(batcher.predict(rows_request([[1.0, 1.0]])))
    await asyncio.sleep(0)
    gone.cancel()
    answer = await asyncio.wait_for(stays, 10)
    assert answer.output("doubled").data.tolist() == [[2.0, 2.0]]
    ((_, sent),) = runtime.calls
    assert sent.inputs[0].data.tolist() == [[1.0, 1.0]]


def test_batching_is_on_only_when_both_limits_are_set(caplog):
    runtime = Recorder()
    settings = ModelSettings(name="m")
    assert batcher_for(settings, runtime) is None
    settings.max_batch_size, settings.max_batch_time = 8, 0.01
    assert isinstance(batcher_for(settings, runtime), AdaptiveBatcher)
    settings.max_batch_time = 0
    assert batcher_for(settings, runtime) is None
    assert "needs max_batch_size > 1 and max_batch_time > 0" in caplog.text
    settings.max_batch_size = -1
    with pytest.raises(ModelLoadError, match="must not be negative"):
        batcher_for(settings, runtime)


def test_runtimes_that_answer_per_request_are_never_batched(caplog):
    from inferline.runtimes.drift import DriftRuntime
    from inferline.runtimes.explainer import ExplainerRuntime
    from inferline.runtimes.outlier import OutlierRuntime

    settings = ModelSettings(name="detector", max_batch_size=8, max_batch_time=0.01)
    for runtime_class in (DriftRuntime, OutlierRuntime, ExplainerRuntime):
        assert batcher_for(settings, runtime_class(settings)) is None
    assert "is not batched" in caplog.text


# --- through the data plane ------------------------------------------------------------------

ECHO = """
import numpy as np

from inferline.protocol.types import InferenceResponse, Tensor
from inferline.runtimes import Runtime


class Echo(Runtime):
    calls = 0

    async def predict(self, request):
        Echo.calls += 1
        x = request.inputs[0].data
        return InferenceResponse("m", [Tensor.from_numpy("y", x + 1), Tensor.from_numpy("z", -x)])
"""


def write_echo(folder, **settings):
    folder.mkdir(parents=True)
    (folder / "model.py").write_text(ECHO)
    doc = {"name": "echo", "implementation": "model.Echo", **settings}
    (folder / "model-settings.json").write_text(json.dumps(doc))
    return folder


@pytest.fixture
async def batched_plane(tmp_path):
    write_echo(tmp_path / "echo", max_batch_size=4, max_batch_time=30)
    plane = DataPlane(ModelRepository([tmp_path]))
    await plane.load_repository()
    yield plane
    await plane.unload_all()


async def test_data_plane_batches_and_keeps_ids_and_outputs(batched_plane):
    asks = [["y"], ["z", "y"], ["y"], ["y", "z"]]
    requests = [rows_request([[float(i)]], f"id-{i}", outputs=asks[i]) for i in range(4)]
    answers = await asyncio.wait_for(
        asyncio.gather(*(batched_plane.infer("echo", None, r) for r in requests)), 10
    )
    for i, answer in enumerate(answers):
        assert answer.id == f"id-{i}"
        assert answer.model_name == "echo"
        assert answer.output("y").data.tolist() == [[i + 1.0]]
        assert [o.name for o in answer.outputs] == asks[i]


async def test_unloading_a_batched_model_leaves_no_caller_waiting(batched_plane):
    waiting = [
        asyncio.create_task(batched_plane.infer("echo", None, rows_request([[1.0]], f"w{i}")))
        for i in range(2)
    ]
    await asyncio.sleep(0.05)
    await asyncio.wait_for(batched_plane.load("echo"), 10)  # a reload replaces the version
    assert [(await t).id for t in waiting] == ["w0", "w1"]
    late = asyncio.create_task(batched_plane.infer("echo", None, rows_request([[1.0]], "late")))
    await asyncio.sleep(0.05)
    await asyncio.wait_for(batched_plane.unload("echo"), 10)
    assert (await asyncio.wait_for(late, 10)).output("y").data.tolist() == [[2.0]]


def test_settings_file_limits_reach_the_batcher(tmp_path):
    write_echo(tmp_path / "echo", max_batch_size=16, max_batch_time=0.05)
    settings = ModelRepository([tmp_path]).find("echo")
    batcher = batcher_for(settings, Recorder())
    assert (batcher.max_batch_size, batcher.max_batch_time) == (16, 0.05)


def test_a_seldon_model_sets_batching_through_its_parameters(tmp_path):
    from inferline.agent.settings import settings_from_spec

    folder = write_echo(tmp_path / "echo", max_batch_size=2, max_batch_time=1)
    parameters = [
        {"name": "max_batch_size", "value": "32"},
        {"name": "max_batch_time", "value": "0.02"},
        {"name": "colour", "value": "blue"},
    ]
    spec = {"storageUri": str(folder), "parameters": parameters}
    settings = settings_from_spec("echo_1", 1, spec)
    # They override model-settings.json and are not handed to the runtime in `extra`.
    assert (settings.max_batch_size, settings.max_batch_time) == (32, 0.02)
    assert settings.extra == {"colour": "blue"}
    spec["parameters"] = [{"name": "max_batch_size", "value": "lots"}]
    with pytest.raises(
        ModelLoadError, match="parameter max_batch_size must be a number, not 'lots'"
    ):
        settings_from_spec("echo_1", 1, spec)


async def test_callers_of_a_batch_that_is_stopped_get_an_error_not_a_hang():
    class Stuck(Recorder):
        async def predict(self, request):
            await asyncio.Event().wait()

    batcher = AdaptiveBatcher(Stuck(), max_batch_size=2, max_batch_time=30)
    callers = [asyncio.create_task(batcher.predict(rows_request([[1.0, 1.0]]))) for _ in range(2)]
    await asyncio.sleep(0.05)
    for task in list(batcher._running):  # as at loop shutdown
        task.cancel()
    for caller in callers:
        with pytest.raises(InferenceError, match="stopped before answering"):
            await asyncio.wait_for(caller, 5)
