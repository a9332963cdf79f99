"""The scheduler core in-process: resources in, placements and statuses out, agents faked."""

import pytest

from inferline.resources import load_resources
from inferline.scheduler.core import Conflict, NotFound, Scheduler
from inferline.scheduler.placement import NO_MATCHING_SERVERS, NOT_ENOUGH_REPLICAS, ReplicaKey
from inferline.scheduler.state import ReplicaState
from inferline.scheduler.store import SchedulerStore

GIB = 1 << 30


def model(name="iris", replicas=1, uri="/models/iris", extra=""):
    text = f"""
apiVersion: mlops.seldon.io/v1alpha1
kind: Model
metadata:
  name: {name}
spec:
  storageUri: {uri}
  requirements: [sklearn]
  replicas: {replicas}
{extra}"""
    return load_resources(text)[0]


def connect(scheduler, index, server="mlserver", capabilities=("sklearn",), memory=GIB):
    replica = ReplicaState(
        ReplicaKey(server, index), f"h{index}:1", f"h{index}:2", frozenset(capabilities), memory, 0
    )
    scheduler.connect_replica(replica)
    return replica.key


def report_ready(scheduler, key):
    """The fake agent loads whatever it was given and reports it ready."""
    models = {m["name"]: ("READY", "") for m in scheduler.desired_models(key)}
    scheduler.report_models(key, models)


@pytest.fixture
def scheduler(tmp_path):
    return Scheduler(SchedulerStore(tmp_path / "s.db"), replica_grace=0)


def test_model_becomes_available_once_its_replica_reports_ready(scheduler):
    key = connect(scheduler, 0)
    assert scheduler.apply(model()) == "created"
    assert scheduler.model_status("iris")["state"] == "ModelProgressing"
    assert [m["name"] for m in scheduler.desired_models(key)] == ["iris_1"]
    report_ready(scheduler, key)
    status = scheduler.model_status("iris")
    assert (status["state"], status["availableReplicas"]) == ("ModelAvailable", 1)
    route = scheduler.route_table().models["iris"]
    assert route.internal_name == "iris_1" and [e.http for e in route.endpoints] == ["h0:1"]


def test_schedule_failed_reasons_and_retry_when_a_server_joins(scheduler):
    scheduler.apply(model())
    status = scheduler.model_status("iris")
    assert (status["state"], status["reason"]) == ("ScheduleFailed", NO_MATCHING_SERVERS)
    assert "ScheduleFailed" in scheduler.route_table().models["iris"].reason
    key = connect(scheduler, 0)
    report_ready(scheduler, key)
    assert scheduler.model_status("iris")["state"] == "ModelAvailable"
    scheduler.apply(model(replicas=2))
    assert scheduler.model_status("iris")["reason"] == NOT_ENOUGH_REPLICAS


def test_replicas_on_distinct_server_replicas_and_partial_scheduling(scheduler):
    keys = [connect(scheduler, i) for i in range(2)]
    scheduler.apply(model(replicas=3, extra="  minReplicas: 2"))
    for key in keys:
        report_ready(scheduler, key)
    status = scheduler.model_status("iris")
    assert (status["state"], status["availableReplicas"]) == ("ModelAvailable", 2)
    assert status["desiredReplicas"] == 3


def test_requirements_and_memory(scheduler):
    connect(scheduler, 0, capabilities=("onnx",))
    key = connect(scheduler, 0, server="sk", capabilities=("sklearn",), memory=GIB)
    scheduler.apply(model(extra="  memory: 512Mi"))
    assert scheduler.desired_models(key)
    scheduler.apply(model("big", extra="  memory: 2Gi"))
    assert scheduler.model_status("big")["state"] == "ScheduleFailed"


def test_a_spec_change_is_a_new_version_and_a_scale_is_not(scheduler):
    keys = [connect(scheduler, i) for i in range(2)]
    scheduler.apply(model())
    for key in keys:
        report_ready(scheduler, key)
    assert scheduler.apply(model()) == "unchanged"
    assert scheduler.apply(model(replicas=2)) == "scaled"
    for key in keys:
        report_ready(scheduler, key)
    assert scheduler.model_status("iris")["availableReplicas"] == 2
    assert scheduler.apply(model(replicas=2, uri="/models/iris-v2")) == "version 2"
    # Until version 2 is ready, version 1 keeps answering.
    assert scheduler.route_table().models["iris"].internal_name == "iris_1"
    for key in keys:
        report_ready(scheduler, key)
    status = scheduler.model_status("iris")
    assert (status["version"], status["state"]) == (2, "ModelAvailable")
    # Version 1 is retired: no longer desired anywhere.
    assert {m["name"] for k in keys for m in scheduler.desired_models(k)} == {"iris_2"}
    assert scheduler.route_table().models["iris"].internal_name == "iris_2"


def test_load_failure_is_model_failed_with_the_reason(scheduler):
    key = connect(scheduler, 0)
    scheduler.apply(model())
    scheduler.report_models(key, {"iris_1": ("UNAVAILABLE", "no model.joblib in /models")})
    status = scheduler.model_status("iris")
    assert (status["state"], status["reason"]) == ("ModelFailed", "no model.joblib in /models")


def test_a_lost_replica_moves_its_models(scheduler):
    first, second = connect(scheduler, 0), connect(scheduler, 1)
    scheduler.apply(model())
    holder = first if scheduler.desired_models(first) else second
    other = second if holder == first else first
    report_ready(scheduler, holder)
    scheduler.disconnect_replica(holder)
    assert [m["name"] for m in scheduler.desired_models(other)] == ["iris_1"]
    report_ready(scheduler, other)
    assert scheduler.model_status("iris")["state"] == "ModelAvailable"


def test_duplicate_replica_is_refused(scheduler):
    connect(scheduler, 0)
    with pytest.raises(Conflict, match="already connected"):
        connect(scheduler, 0)


def test_delete_unknown_and_known(scheduler):
    with pytest.raises(NotFound, match="model 'nope' not found"):
        scheduler.delete("Model", "nope")
    key = connect(scheduler, 0)
    scheduler.apply(model())
    scheduler.delete("Model", "iris")
    assert scheduler.desired_models(key) == []
    assert "iris" not in scheduler.route_table().models


def test_state_survives_a_restart_and_waits_for_replicas(tmp_path):
    store_path = tmp_path / "s.db"
    first = Scheduler(SchedulerStore(store_path), replica_grace=0)
    key = connect(first, 0)
    first.apply(model())
    report_ready(first, key)
    first.store.close()

    again = Scheduler(SchedulerStore(store_path), replica_grace=60)
    status = again.model_status("iris")
    # Within the reconnect grace the replica is presumed to still serve what it served: the
    # status stays and the router keeps its endpoint, so a scheduler restart is no outage.
    assert (status["version"], status["state"]) == (1, "ModelAvailable")
    assert [e.http for e in again.route_table().models["iris"].endpoints] == ["h0:1"]
    # Another replica joins first: within the grace, the model stays with its own replica.
    other = connect(again, 1)
    assert again.desired_models(other) == []
    connect(again, 0)
    again.report_models(key, {"iris_1": ("READY", "")})
    assert again.model_status("iris")["state"] == "ModelAvailable"
    assert again.route_table().models["iris"].endpoints[0].replica == 0


def test_pipelines_get_a_version_per_load_and_engine_statuses(scheduler):
    pipeline = load_resources("""
apiVersion: mlops.seldon.io/v1alpha1
kind: Pipeline
metadata: {name: chain}
spec:
  steps: [{name: a}, {name: b, inputs: [a]}]
  output: {steps: [b]}
""")[0]
    assert scheduler.apply(pipeline) == "created"
    # Every load is a new version, as in Seldon Core 2, even with the same spec.
    assert scheduler.apply(pipeline) == "version 2"
    status = scheduler.pipeline_status("chain")
    assert (status["version"], status["state"]) == (2, "PipelineCreate")
    assert status["models"] == {"a": "ModelNotFound", "b": "ModelNotFound"}
    assert status["modelsReady"] is False
    # Reports about a replaced version are ignored; the current one's are kept.
    scheduler.set_pipeline_status("chain", 1, "PipelineReady", "")
    assert scheduler.pipeline_status("chain")["state"] == "PipelineCreate"
    scheduler.set_pipeline_status("chain", 2, "PipelineReady", "created pipeline")
    assert scheduler.pipeline_status("chain")["state"] == "PipelineReady"
    assert scheduler.desired_pipelines()["chain"][0] == 2
    scheduler.delete("Pipeline", "chain")
    assert scheduler.apply(pipeline) == "created"


def test_after_the_grace_a_replica_that_did_not_come_back_is_not_presumed(tmp_path):
    first = Scheduler(SchedulerStore(tmp_path / "s.db"), replica_grace=0)
    key = connect(first, 0)
    first.apply(model())
    report_ready(first, key)
    first.store.close()
    again = Scheduler(SchedulerStore(tmp_path / "s.db"), replica_grace=0)
    status = again.model_status("iris")
    assert (status["version"], status["state"]) == (1, "ScheduleFailed")
    assert again.route_table().models["iris"].endpoints == []


def test_a_replica_lost_soon_after_start_moves_its_models_at_once(tmp_path):
    # The reconnect grace is for replicas known from before a restart, not for ones seen leaving.
    scheduler = Scheduler(SchedulerStore(tmp_path / "s.db"), replica_grace=60)
    first, second = connect(scheduler, 0), connect(scheduler, 1)
    scheduler.apply(model())
    holder, other = (first, second) if scheduler.desired_models(first) else (second, first)
    report_ready(scheduler, holder)
    scheduler.disconnect_replica(holder)
    assert [m["name"] for m in scheduler.desired_models(other)] == ["iris_1"]
