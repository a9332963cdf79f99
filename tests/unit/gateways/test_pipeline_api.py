"""PipelineApi, the router's handler for `<name>.pipeline`: which error a call gets before any
message is written, over REST and gRPC."""

import orjson
import pytest

from inferline.dataflow.topics import TopicNames
from inferline.gateways.pipeline_api import PipelineApi
from inferline.gateways.pipeline_gateway import PipelineGateway, PipelineNotReady
from inferline.protocol.errors import ModelNotFound
from inferline.resources import load_resources
from inferline.router.rest import ModelCall
from inferline.scheduler.core import Scheduler
from inferline.scheduler.store import SchedulerStore

PIPELINE = """
apiVersion: mlops.seldon.io/v1alpha1
kind: Pipeline
metadata: {name: known}
spec:
  steps: [{name: m}]
  output: {steps: [m]}
"""
BODY = orjson.dumps(
    {"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1], "data": [1.0]}]}
)


@pytest.fixture
async def api(bus):
    scheduler = Scheduler(SchedulerStore(), replica_grace=0)
    for resource in load_resources(PIPELINE):
        scheduler.apply(resource)
    gateway = PipelineGateway(bus, TopicNames(), instance="test", timeout=1)
    yield PipelineApi(gateway, scheduler)
    await gateway.close()


def call(name: str) -> ModelCall:
    scope = {"method": "POST", "headers": [], "query_string": b""}
    return ModelCall(scope, name, None, "infer", "rid")


async def test_an_unknown_pipeline_is_not_found_by_its_routed_name(api):
    with pytest.raises(ModelNotFound, match=r"model 'nope\.pipeline' not found"):
        await api.rest(call("nope.pipeline"), BODY)


async def test_a_known_pipeline_that_is_not_running_is_not_ready(api):
    with pytest.raises(PipelineNotReady, match="'known' is not running"):
        await api.rest(call("known.pipeline"), BODY)
