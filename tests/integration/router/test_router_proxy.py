"""The router in front of two real model server replicas, called by tritonclient and plain HTTP.

See conftest.py: replicas `server-0` and `server-1` both serve `echo_1`, routed as model `echo`.
"""

import threading

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from inferline.demo import free_port
from inferline.protocol.proto import inference_pb2 as pb
from inferline.router.balancer import DEFAULT_EJECTION_TIME
from inferline.router.routes import Endpoint, ModelRoute

DATA = np.array([[1.5, 2.5, 3.5]], dtype=np.float32)
SERVERS = {"server-0", "server-1"}


@pytest.fixture(scope="module")
def rest(cluster):
    with httpx.Client(base_url=cluster.url, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def http_client(cluster):
    client = httpclient.InferenceServerClient(url=cluster.http_address)
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc_client(cluster):
    client = grpcclient.InferenceServerClient(url=cluster.grpc_address)
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc_channel(cluster):
    with grpc.insecure_channel(cluster.grpc_address) as channel:
        yield channel


def infer_body(**parameters) -> dict:
    return {
        "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1.5, 2.5, 3.5]}],
        "parameters": parameters,
    }


def http_infer(client, model="echo", binary=True, **kwargs):
    tensor = httpclient.InferInput("x", [1, 3], "FP32")
    tensor.set_data_from_numpy(DATA, binary_data=binary)
    outputs = [httpclient.InferRequestedOutput("x", binary_data=binary)]
    return client.infer(model, [tensor], outputs=outputs, **kwargs)


def grpc_infer(client, model="echo", **kwargs):
    tensor = grpcclient.InferInput("x", [1, 3], "FP32")
    tensor.set_data_from_numpy(DATA)
    return client.infer(model, [tensor], **kwargs)


def grpc_server_of(result) -> str:
    return result.get_response().parameters["server"].string_param


def raw_grpc_infer(channel, model="echo", metadata=(), **parameters):
    call = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=pb.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelInferResponse.FromString,
    )
    request = pb.ModelInferRequest(model_name=model, id="raw-1")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 3])
    tensor.contents.fp32_contents.extend([1.5, 2.5, 3.5])
    for key, value in parameters.items():
        request.parameters[key].string_param = str(value)
    return call.with_call(request, metadata=metadata, timeout=10)


def requests_seen(cluster, request_id: str) -> list[tuple[str, dict]]:
    return [
        (path, headers)
        for replica in cluster.replicas
        for path, headers in replica.recorder.requests
        if headers.get("x-request-id") == request_id
    ]


# --- answered by the router itself ------------------------------------------------------------


def test_router_health_and_metadata(rest, http_client, grpc_client):
    assert rest.get("/v2/health/live").json() == {"live": True}
    ready = rest.get("/v2/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})
    assert rest.get("/v2").json()["name"] == "inferline-router"
    assert http_client.is_server_live() and http_client.is_server_ready()
    assert grpc_client.is_server_live() and grpc_client.is_server_ready()
    assert grpc_client.get_server_metadata().name == "inferline-router"


# --- proxied calls ----------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_by_path_with_tritonclient_http(http_client, binary):
    result = http_infer(http_client, binary=binary)
    response = result.get_response()
    assert response["model_name"] == "echo_1"
    assert response["model_version"] == "1"
    assert response["parameters"]["server"] in SERVERS
    np.testing.assert_array_equal(result.as_numpy("x"), DATA)


def test_infer_with_tritonclient_grpc(grpc_client):
    result = grpc_infer(grpc_client)
    assert result.get_response().model_name == "echo_1"
    assert grpc_server_of(result) in SERVERS
    np.testing.assert_array_equal(result.as_numpy("x"), DATA)


def test_seldon_model_header_beats_the_path(rest, http_client, grpc_client):
    answer = rest.post(
        "/v2/models/whatever/infer", json=infer_body(), headers={"seldon-model": "echo"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_name"] == "echo_1"
    result = http_infer(http_client, model="whatever", headers={"seldon-model": "echo"})
    assert result.get_response()["model_name"] == "echo_1"
    result = grpc_infer(grpc_client, model="whatever", headers={"seldon-model": "echo"})
    assert result.get_response().model_name == "echo_1"


def test_version_in_path_is_forwarded(cluster, rest):
    answer = rest.post(
        "/v2/models/echo/versions/1/infer", json=infer_body(), headers={"x-request-id": "v-1"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_version"] == "1"
    [(path, _)] = requests_seen(cluster, "v-1")
    assert path == "/v2/models/echo_1/versions/1/infer"


def test_binary_answer_passes_through_unchanged(rest):
    header = b'{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","parameters":{"binary_data_size":12}}],"parameters":{"binary_data_output":true}}'  # noqa: E501
    answer = rest.post(
        "/v2/models/echo/infer",
        content=header + DATA.tobytes(),
        headers={
            "content-type": "application/octet-stream",
            "inference-header-content-length": str(len(header)),
        },
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/octet-stream"
    json_length = int(answer.headers["inference-header-content-length"])
    assert answer.content[json_length:] == DATA.tobytes()


def test_request_id_and_route_headers(cluster, rest):
    answer = rest.post("/v2/models/echo/infer", json=infer_body(), headers={"x-request-id": "my-1"})
    assert answer.headers["x-request-id"] == "my-1"
    assert answer.headers["x-seldon-route"] == ":echo_1:"
    [(path, headers)] = requests_seen(cluster, "my-1")
    assert path == "/v2/models/echo_1/infer"
    assert headers["seldon-internal-model"] == "echo_1"

    answer = rest.post("/v2/models/echo/infer", json=infer_body())
    generated = answer.headers["x-request-id"]
    assert len(generated) == 20
    assert len(requests_seen(cluster, generated)) == 1
    other = rest.post("/v2/models/echo/infer", json=infer_body()).headers["x-request-id"]
    assert other != generated


def test_grpc_request_id_and_route_metadata(grpc_channel):
    response, call = raw_grpc_infer(grpc_channel, metadata=(("x-request-id", "g-1"),))
    assert response.model_name == "echo_1"
    metadata = dict(call.initial_metadata())
    assert metadata["x-request-id"] == "g-1"
    assert metadata["x-seldon-route"] == ":echo_1:"
    _, call = raw_grpc_infer(grpc_channel, model="other", metadata=(("seldon-model", "echo"),))
    assert len(dict(call.initial_metadata())["x-request-id"]) == 20


def test_model_metadata_and_ready(rest, http_client, grpc_client):
    assert rest.get("/v2/models/echo").json()["name"] == "echo_1"
    ready = rest.get("/v2/models/echo/ready")
    assert (ready.status_code, ready.json()) == (200, {"name": "echo_1", "ready": True})
    assert http_client.is_model_ready("echo")
    assert http_client.get_model_metadata("echo")["name"] == "echo_1"
    assert grpc_client.is_model_ready("echo")
    assert grpc_client.get_model_metadata("echo").name == "echo_1"


# --- balancing and failover -------------------------------------------------------------------


def test_requests_spread_over_both_replicas(http_client, grpc_client):
    http_servers = [
        http_infer(http_client).get_response()["parameters"]["server"] for _ in range(8)
    ]
    grpc_servers = [grpc_server_of(grpc_infer(grpc_client)) for _ in range(8)]
    for servers in (http_servers, grpc_servers):
        assert set(servers) == SERVERS
        assert min(servers.count(s) for s in SERVERS) >= 3


def test_least_busy_replica_is_chosen(cluster, rest):
    slow: dict = {}
    thread = threading.Thread(
        target=lambda: slow.update(
            rest.post("/v2/models/echo/infer", json=infer_body(sleep=0.6)).json()
        )
    )
    thread.start()
    balancer = cluster.router.core.balancer
    endpoints = [r.endpoint for r in cluster.replicas[:2]]
    while not any(balancer.outstanding(e) for e in endpoints):
        thread.join(0.005)
    quick = [
        rest.post("/v2/models/echo/infer", json=infer_body()).json()["parameters"]["server"]
        for _ in range(4)
    ]
    thread.join()
    busy = slow["parameters"]["server"]
    assert quick == [(SERVERS - {busy}).pop()] * 4


def test_a_stopped_replica_is_skipped(routes, rest, grpc_client):
    extra = routes.run(routes.start_replica("server-extra", 2))
    routes.set_routes(
        ModelRoute("echo", "echo_1", 1, [routes.replicas[0].endpoint, extra.endpoint])
    )
    seen = {rest.post("/v2/models/echo/infer", json=infer_body()).json()["parameters"]["server"]}
    seen.add(rest.post("/v2/models/echo/infer", json=infer_body()).json()["parameters"]["server"])
    assert seen == {"server-0", "server-extra"}

    routes.run(extra.stop())
    balancer = routes.router.core.balancer
    # Without setting the dead replica aside, every other call tries it first and fails over.
    balancer.ejection_time = 0
    try:
        for _ in range(4):
            answer = rest.post("/v2/models/echo/infer", json=infer_body())
            assert answer.status_code == 200, answer.text
            assert answer.json()["parameters"]["server"] == "server-0"
        for _ in range(4):
            assert grpc_server_of(grpc_infer(grpc_client)) == "server-0"
    finally:
        balancer.ejection_time = DEFAULT_EJECTION_TIME
    # Set aside after a failure, the dead replica is not tried again for a while.
    for _ in range(2):
        assert grpc_server_of(grpc_infer(grpc_client)) == "server-0"
    assert balancer.is_ejected(extra.endpoint)


def test_no_replica_reachable_is_503(routes, rest, grpc_client):
    dead = Endpoint(f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}", "gone", 0)
    routes.set_routes(ModelRoute("echo", "echo_1", 1, [dead]))
    answer = rest.post("/v2/models/echo/infer", json=infer_body())
    assert answer.status_code == 503
    assert "model 'echo' is unavailable" in answer.json()["error"]
    with pytest.raises(InferenceServerException) as failure:
        grpc_infer(grpc_client)
    assert failure.value.status() == "StatusCode.UNAVAILABLE"
    assert "model 'echo' is unavailable" in failure.value.message()


# --- errors -----------------------------------------------------------------------------------


def test_unknown_model_is_404(rest, http_client, grpc_client):
    answer = rest.post("/v2/models/nope/infer", json=infer_body())
    assert (answer.status_code, answer.json()) == (404, {"error": "model 'nope' not found"})
    assert answer.headers["x-request-id"]
    with pytest.raises(InferenceServerException, match="model 'nope' not found"):
        http_infer(http_client, model="nope")
    with pytest.raises(InferenceServerException) as failure:
        grpc_infer(grpc_client, model="nope")
    assert failure.value.status() == "StatusCode.NOT_FOUND"
    assert failure.value.message() == "model 'nope' not found"
    with pytest.raises(InferenceServerException) as failure:
        grpc_client.is_model_ready("nope")
    assert failure.value.status() == "StatusCode.NOT_FOUND"


def test_grpc_errors_carry_the_request_id(grpc_channel):
    with pytest.raises(grpc.RpcError) as failure:
        raw_grpc_infer(grpc_channel, model="nope", metadata=(("x-request-id", "lost-1"),))
    assert failure.value.code() is grpc.StatusCode.NOT_FOUND
    assert dict(failure.value.initial_metadata())["x-request-id"] == "lost-1"


def test_model_without_replica_is_503_with_reason(routes, rest, grpc_client):
    reason = "ScheduleFailed: no server has 8GB free"
    routes.set_routes(ModelRoute("echo", "echo_1", 1, [], reason=reason))
    answer = rest.post("/v2/models/echo/infer", json=infer_body())
    assert answer.status_code == 503
    assert answer.json() == {"error": f"model 'echo' has no ready replica: {reason}"}
    with pytest.raises(InferenceServerException) as failure:
        grpc_infer(grpc_client)
    assert failure.value.status() == "StatusCode.UNAVAILABLE"
    assert reason in failure.value.message()


def test_slow_model_times_out_with_504(routes, rest, grpc_client):
    endpoints = [r.endpoint for r in routes.replicas[:2]]
    routes.set_routes(ModelRoute("echo", "echo_1", 1, endpoints, timeout=0.3))
    answer = rest.post("/v2/models/echo/infer", json=infer_body(sleep=1.5))
    assert answer.status_code == 504
    assert answer.json() == {"error": "model 'echo' did not answer within 0.3 s (timeout)"}
    with pytest.raises(InferenceServerException) as failure:
        grpc_infer(grpc_client, parameters={"sleep": 1.5})
    assert failure.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    assert "model 'echo' did not answer within 0.3 s" in failure.value.message()
    # A quick call on the same route is unaffected.
    assert rest.post("/v2/models/echo/infer", json=infer_body()).status_code == 200


def test_upstream_error_passes_through(cluster, rest, grpc_client):
    direct = httpx.post(
        f"http://{cluster.replicas[0].endpoint.http}/v2/models/echo_1/infer",
        json=infer_body(fail="boom"),
    )
    answer = rest.post("/v2/models/echo/infer", json=infer_body(fail="boom"))
    assert answer.status_code == direct.status_code == 400
    assert answer.content == direct.content
    assert answer.json() == {"error": "model 'echo_1' failed: boom"}
    with pytest.raises(InferenceServerException) as failure:
        grpc_infer(grpc_client, parameters={"fail": "boom"})
    assert failure.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert failure.value.message() == "model 'echo_1' failed: boom"


def test_pipelines_are_not_served_yet_and_unknown_experiments_are_404(rest, grpc_channel):
    for path, headers in [
        ("/v2/pipelines/p/infer", {}),
        ("/v2/models/p.pipeline/infer", {}),
        ("/v2/models/echo/infer", {"seldon-model": "p.pipeline"}),
    ]:
        answer = rest.post(path, json=infer_body(), headers=headers)
        assert answer.status_code == 404
        assert answer.json() == {
            "error": "'p.pipeline': pipelines are not served by this router yet"
        }
    answer = rest.post("/v2/models/e.experiment/infer", json=infer_body())
    assert answer.status_code == 404
    assert answer.json()["error"] == "experiment 'e' not found"
    with pytest.raises(grpc.RpcError) as failure:
        raw_grpc_infer(grpc_channel, metadata=(("seldon-model", "p.pipeline"),))
    assert failure.value.code() is grpc.StatusCode.NOT_FOUND


def test_bad_paths_methods_and_sizes(rest):
    assert rest.get("/v2/models/echo/explain").status_code == 404
    assert rest.get("/v1/models/echo").status_code == 404
    assert rest.get("/v2/models/echo/infer").status_code == 405
    too_big = rest.post("/v2/models/echo/infer", content=b"x" * (1024 * 1024 + 1))
    assert too_big.status_code == 413
    assert "router's limit" in too_big.json()["error"]


# --- route changes ----------------------------------------------------------------------------


def test_route_changes_apply_without_restart(routes, rest, http_client, grpc_client):
    first = routes.replicas[0]
    routes.run(first.load_echo(2))
    routes.set_routes(ModelRoute("echo", "echo_2", 2, [first.endpoint]))
    answer = rest.post("/v2/models/echo/infer", json=infer_body())
    assert answer.json()["model_name"] == "echo_2"
    assert answer.headers["x-seldon-route"] == ":echo_2:"
    assert http_infer(http_client).get_response()["model_name"] == "echo_2"
    assert grpc_infer(grpc_client).get_response().model_name == "echo_2"

    routes.set_routes()
    assert rest.post("/v2/models/echo/infer", json=infer_body()).status_code == 404
