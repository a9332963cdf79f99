"""Experiments in the router core (split, sticky sessions, mirror) and in the scheduler (when one
is active, its status), in-process: a seeded random source, a fake upstream for the replicas."""

import asyncio
import random
from collections import Counter

import httpx
import pytest

from inferline.resources import load_resources
from inferline.router.core import (
    ExperimentNotActive,
    MirrorCalls,
    ModelRouter,
    UnknownExperiment,
    route_targets,
)
from inferline.router.rest import RouterRestApp
from inferline.router.routes import Endpoint, ExperimentRoute, ModelRoute, RouteTable
from inferline.router.table import MutableRouteSource
from inferline.router.upstream import UpstreamResponse
from inferline.scheduler.core import Scheduler
from inferline.scheduler.placement import ReplicaKey
from inferline.scheduler.state import ReplicaState
from inferline.scheduler.store import SchedulerStore

IRIS = Endpoint("10.0.0.1:8080", "10.0.0.1:8081", "server", 0)
IRIS2 = Endpoint("10.0.0.2:8080", "10.0.0.2:8081", "server", 1)
PICKS = 2000


def table(*experiments: ExperimentRoute) -> RouteTable:
    return RouteTable(
        1,
        {
            "iris": ModelRoute("iris", "iris_1", 1, [IRIS]),
            "iris2": ModelRoute("iris2", "iris2_3", 3, [IRIS2]),
        },
        {e.name: e for e in experiments},
    )


def ab(default="iris", weights=(50, 50), mirror=None, active=True, reason="") -> ExperimentRoute:
    return ExperimentRoute(
        "ab",
        [("iris", weights[0]), ("iris2", weights[1])],
        default=default,
        mirror=mirror,
        active=active,
        reason=reason,
    )


def pab() -> ExperimentRoute:
    """A pipeline experiment: add10 against mul10, 50/50, on add10's own name."""
    return ExperimentRoute(
        "pab",
        [("add10", 1), ("mul10", 1)],
        default="add10",
        resource_type="pipeline",
        active=True,
    )


def router(*experiments: ExperimentRoute, seed: int = 7) -> ModelRouter:
    return ModelRouter(MutableRouteSource(table(*experiments)), rng=random.Random(seed))


# --- the split ----------------------------------------------------------------------------------


@pytest.mark.parametrize("weights", [(50, 50), (25, 75), (90, 10)])
def test_the_experiment_endpoint_splits_by_weight(weights):
    core = router(ab(weights=weights))
    picks = Counter(core.plan("ab.experiment").target for _ in range(PICKS))
    share = picks["iris"] / PICKS
    assert abs(share - weights[0] / sum(weights)) < 0.04, picks
    assert set(picks) <= {"iris", "iris2"}


def test_callers_of_the_default_model_are_split_too():
    core = router(ab(default="iris"))
    picks = Counter(core.plan("iris").target for _ in range(PICKS))
    assert 0.45 < picks["iris2"] / PICKS < 0.55, picks
    # The other candidate's own endpoint is not split.
    assert {core.plan("iris2").target for _ in range(50)} == {"iris2"}


def test_without_default_only_the_experiment_name_is_split():
    core = router(ab(default=None))
    assert {core.plan("iris").target for _ in range(200)} == {"iris"}
    assert {core.plan("ab.experiment").target for _ in range(200)} == {"iris", "iris2"}


def test_a_pipeline_experiment_picks_pipelines():
    core = router(pab())
    targets = {core.plan("add10.pipeline").target for _ in range(200)}
    assert targets == {"add10.pipeline", "mul10.pipeline"}
    # A model named like the pipeline is not split by a pipeline experiment.
    assert core.plan("add10").target == "add10"
    assert core.plan("add10.pipeline", [":mul10.pipeline:"]).target == "mul10.pipeline"


def test_an_inactive_or_unknown_experiment_is_refused_naming_it():
    core = router(ab(active=False, reason="model candidates not ready: iris2 (model not found)"))
    with pytest.raises(ExperimentNotActive) as refused:
        core.plan("ab.experiment")
    assert refused.value.status == 503
    assert refused.value.message == (
        "experiment 'ab' is not active: model candidates not ready: iris2 (model not found)"
    )
    # Its default is served as a plain model meanwhile.
    assert {core.plan("iris").target for _ in range(50)} == {"iris"}
    with pytest.raises(UnknownExperiment) as unknown:
        core.plan("nope.experiment")
    assert (unknown.value.status, unknown.value.message) == (404, "experiment 'nope' not found")


# --- sticky sessions ------------------------------------------------------------------------------


def test_route_targets_reads_accumulated_and_joined_values():
    assert route_targets([":iris_1:"]) == {"iris_1"}
    assert route_targets([":add10_1::p.pipeline:", ":a_2:, :b_3:"]) == {
        "add10_1",
        "p.pipeline",
        "a_2",
        "b_3",
    }
    assert route_targets(["", "garbage"]) == set()


def test_a_sticky_route_pins_the_candidate_it_names():
    core = router(ab())
    assert {core.plan("iris", [":iris2_3:"]).target for _ in range(200)} == {"iris2"}
    assert {core.plan("ab.experiment", [":iris_1:"]).target for _ in range(200)} == {"iris"}
    # Another version of the candidate still names it (model names have no underscore).
    assert core.plan("iris", [":iris2_9:"]).target == "iris2"
    # A route naming no candidate leaves the split random.
    assert {core.plan("iris", [":wine_1:"]).target for _ in range(200)} == {"iris", "iris2"}


# --- mirror ---------------------------------------------------------------------------------------


def test_mirror_share_follows_percent_and_only_infer_is_copied():
    core = router(ab(weights=(100, 0), mirror=("iris2", 30)))
    plans = [core.plan("iris") for _ in range(PICKS)]
    assert {p.target for p in plans} == {"iris"}
    copied = sum(p.mirror == "iris2" for p in plans) / PICKS
    assert 0.26 < copied < 0.34
    assert all(core.plan("iris", mirror=False).mirror is None for _ in range(100))
    always = router(ab(weights=(100, 0), mirror=("iris2", 100)))
    assert all(always.plan("ab.experiment").mirror == "iris2" for _ in range(100))


async def test_mirror_calls_are_capped_and_their_failures_dropped():
    mirrors = MirrorCalls(limit=3)
    release = asyncio.Event()

    async def slow():
        await release.wait()

    async def failing():
        raise RuntimeError("mirror down")

    started = [mirrors.submit(slow, "iris2") for _ in range(5)]
    assert started == [True, True, True, False, False]
    assert (mirrors.in_flight, mirrors.skipped) == (3, 2)
    release.set()
    await asyncio.sleep(0.01)
    assert mirrors.in_flight == 0
    assert mirrors.submit(failing, "iris2")
    await asyncio.sleep(0.01)
    assert (mirrors.failed, mirrors.sent) == (1, 4)
    await mirrors.close()


# --- through the REST adapter ---------------------------------------------------------------------


class SlowMirrorUpstream:
    """Each replica answers with its address; IRIS2 hangs until released when `hang` is set."""

    def __init__(self):
        self.calls: list[str] = []
        self.hang = False
        self.release = asyncio.Event()

    async def request(self, address, method, target, headers, body=b""):
        self.calls.append(target)
        if address == IRIS2.http and self.hang:
            await self.release.wait()
        return UpstreamResponse(200, [(b"content-type", b"application/json")], target.encode())


async def client_for(core: ModelRouter, upstream, handlers=None) -> httpx.AsyncClient:
    app = RouterRestApp(core, upstream, special_handlers=handlers)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://router")


async def test_rest_answers_name_the_candidate_and_sticky_routes_pin_it():
    upstream = SlowMirrorUpstream()
    async with await client_for(router(ab()), upstream) as client:
        seen = Counter()
        for _ in range(100):
            answer = await client.post("/v2/models/iris/infer", content=b"{}")
            route = answer.headers["x-seldon-route"]
            # The replica that answered is the one the route names.
            assert answer.text == f"/v2/models/{route.strip(':')}/infer"
            seen[route] += 1
        assert set(seen) == {":iris_1:", ":iris2_3:"}, seen
        for _ in range(20):
            answer = await client.post(
                "/v2/models/iris/infer",
                content=b"{}",
                headers={"x-seldon-route": ":iris2_3:"},
            )
            assert answer.headers["x-seldon-route"] == ":iris2_3:"
        refused = await client.post("/v2/models/nope.experiment/infer", content=b"{}")
        assert refused.status_code == 404
        assert refused.json() == {"error": "experiment 'nope' not found"}


async def test_a_slow_mirror_never_delays_the_caller():
    upstream = SlowMirrorUpstream()
    upstream.hang = True
    core = router(ab(weights=(100, 0), mirror=("iris2", 100)))
    core.mirrors.limit = 4
    async with await client_for(core, upstream) as client:
        for _ in range(10):
            answer = await asyncio.wait_for(
                client.post("/v2/models/ab.experiment/infer", content=b"{}"), 5
            )
            assert answer.status_code == 200
            assert answer.headers["x-seldon-route"] == ":iris_1:"
        assert (core.mirrors.in_flight, core.mirrors.skipped) == (4, 6)
        upstream.release.set()
        await asyncio.sleep(0.05)
        assert upstream.calls.count("/v2/models/iris2_3/infer") == 4
    await core.mirrors.close()


async def test_pipeline_candidates_are_called_through_the_pipeline_handler():
    async def pipelines(call, body):
        return 200, [(b"x-seldon-route", f":{call.name}:".encode())], call.name.encode()

    core = router(pab())
    async with await client_for(core, SlowMirrorUpstream(), {".pipeline": pipelines}) as client:
        names = set()
        for _ in range(40):
            answer = await client.post("/v2/pipelines/add10/infer", content=b"{}")
            assert answer.headers["x-seldon-route"] == f":{answer.text}:"
            names.add(answer.text)
        assert names == {"add10.pipeline", "mul10.pipeline"}


# --- the scheduler: when an experiment is active, its status -------------------------------------


def resource(text: str):
    return load_resources(text)[0]


def model(name: str):
    return resource(
        f"""
apiVersion: mlops.seldon.io/v1alpha1
kind: Model
metadata: {{name: {name}}}
spec: {{storageUri: /models/iris, requirements: [sklearn]}}
"""
    )


def experiment(candidates: list[str], default: str | None = "iris", mirror: str | None = None):
    lines = [
        "apiVersion: mlops.seldon.io/v1alpha1",
        "kind: Experiment",
        "metadata: {name: ab}",
        "spec:",
    ]
    if default:
        lines.append(f"  default: {default}")
    lines.append("  candidates:")
    lines += [f"  - {{name: {c}, weight: 50}}" for c in candidates]
    if mirror:
        lines.append(f"  mirror: {{name: {mirror}, percent: 100}}")
    return resource("\n".join(lines))


@pytest.fixture
def scheduler(tmp_path):
    scheduler = Scheduler(SchedulerStore(tmp_path / "s.db"), replica_grace=0)
    key = ReplicaKey("mlserver", 0)
    scheduler.connect_replica(ReplicaState(key, "h:1", "h:2", frozenset({"sklearn"}), 1 << 30, 0))
    scheduler.key = key
    return scheduler


def load_ready(scheduler, *names):
    for name in names:
        scheduler.apply(model(name))
    models = {m["name"]: ("READY", "") for m in scheduler.desired_models(scheduler.key)}
    scheduler.report_models(scheduler.key, models)


def test_an_experiment_waits_for_its_candidates_naming_the_missing_ones(scheduler):
    load_ready(scheduler, "iris")
    scheduler.apply(experiment(["iris", "iris2"], mirror="iris3"))
    status = scheduler.experiment_status("ab")
    assert status["active"] is False
    assert status["statusDescription"] == ("model candidates not ready: iris2 (model not found)")
    assert status["conditions"][0] == {
        "type": "ExperimentReady",
        "status": "False",
        "message": "model candidates not ready: iris2 (model not found)",
    }
    assert not scheduler.route_table().experiments["ab"].active
    load_ready(scheduler, "iris2")
    status = scheduler.experiment_status("ab")
    assert status["candidatesReady"] and not status["mirrorReady"]
    assert status["statusDescription"] == "mirror iris3 not ready (model not found)"
    load_ready(scheduler, "iris3")
    status = scheduler.experiment_status("ab")
    assert status["active"] and status["statusDescription"] == "experiment active"
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "ExperimentReady": "True",
        "CandidatesReady": "True",
        "MirrorReady": "True",
        "Ready": "True",
    }
    routes = scheduler.route_table()
    assert routes.split_of("iris", "model").name == "ab"
    # The table crosses to remote routers as JSON.
    assert RouteTable.from_dict(routes.to_dict()).experiments == routes.experiments


def test_moving_the_default_and_unloading_revert_the_old_routes(scheduler):
    load_ready(scheduler, "iris", "iris2", "iris3")
    scheduler.apply(experiment(["iris", "iris2"]))
    assert scheduler.route_table().split_of("iris", "model") is not None
    scheduler.apply(experiment(["iris2", "iris3"], default="iris3"))
    routes = scheduler.route_table()
    assert routes.split_of("iris", "model") is None
    assert routes.split_of("iris3", "model").candidates == [("iris2", 50), ("iris3", 50)]
    scheduler.delete("Experiment", "ab")
    routes = scheduler.route_table()
    assert routes.experiments == {} and routes.split_of("iris3", "model") is None


def test_resolve_applies_the_split_for_callers_without_a_plan():
    # Pipeline steps call their models through `resolve`: a model experiment's split reaches them.
    core = router(ab())
    picks = Counter(core.resolve("iris").internal_name for _ in range(400))
    assert set(picks) == {"iris_1", "iris2_3"}, picks
    assert {core.route_of("iris").internal_name for _ in range(50)} == {"iris_1"}


def test_a_candidate_that_goes_away_reverts_the_default_to_plain(scheduler):
    load_ready(scheduler, "iris", "iris2")
    scheduler.apply(experiment(["iris", "iris2"]))
    assert scheduler.route_table().split_of("iris", "model") is not None
    scheduler.delete("Model", "iris2")
    routes = scheduler.route_table()
    assert routes.split_of("iris", "model") is None
    assert routes.experiments["ab"].reason == "model candidates not ready: iris2 (model not found)"
