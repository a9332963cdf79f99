from inferline.scheduler.placement import (
    NO_MATCHING_SERVERS,
    NOT_ENOUGH_REPLICAS,
    ModelDemand,
    ReplicaCandidate,
    ReplicaKey,
    place,
)

GIB = 1 << 30


def replica(
    server, index, free=GIB, capabilities=("sklearn", "mlserver"), models=(), draining=False
):
    return ReplicaCandidate(
        ReplicaKey(server, index), frozenset(capabilities), free, frozenset(models), draining
    )


def test_places_on_the_replica_with_most_free_memory():
    candidates = [replica("a", 0, free=GIB), replica("a", 1, free=2 * GIB)]
    assert place(ModelDemand("iris", 1), candidates).replicas == [ReplicaKey("a", 1)]


def test_replicas_go_to_distinct_replicas_of_one_server():
    candidates = [replica("a", 0), replica("b", 0), replica("b", 1)]
    placement = place(ModelDemand("iris", 2), candidates)
    assert placement.replicas == [ReplicaKey("b", 0), ReplicaKey("b", 1)]


def test_requirements_must_all_be_capabilities():
    candidates = [replica("triton", 0, capabilities=("onnx",)), replica("mlserver", 0)]
    demand = ModelDemand("iris", 1, requirements=("sklearn",))
    assert place(demand, candidates).replicas == [ReplicaKey("mlserver", 0)]
    missing = ModelDemand("iris", 1, requirements=("sklearn", "gpu"))
    assert place(missing, candidates).failure == NO_MATCHING_SERVERS


def test_server_pinning():
    candidates = [replica("a", 0, free=8 * GIB), replica("b", 0)]
    assert place(ModelDemand("iris", 1, server="b"), candidates).replicas == [ReplicaKey("b", 0)]
    assert place(ModelDemand("iris", 1, server="c"), candidates).failure == NO_MATCHING_SERVERS


def test_memory_filter_and_not_enough_replicas():
    candidates = [replica("a", 0, free=100), replica("a", 1, free=1000)]
    assert place(ModelDemand("big", 1, memory=500), candidates).replicas == [ReplicaKey("a", 1)]
    placement = place(ModelDemand("big", 2, memory=500), candidates)
    assert placement.failure == NOT_ENOUGH_REPLICAS and placement.replicas == []


def test_partial_scheduling_with_min_replicas():
    candidates = [replica("a", 0), replica("a", 1)]
    partial = place(ModelDemand("iris", 3, min_replicas=2), candidates)
    assert partial.failure is None and len(partial.replicas) == 2
    assert place(ModelDemand("iris", 3, min_replicas=3), candidates).failure == NOT_ENOUGH_REPLICAS


def test_replicas_holding_the_model_come_first_even_when_full():
    candidates = [replica("a", 0, free=10 * GIB), replica("a", 1, free=0, models=("iris",))]
    placement = place(ModelDemand("iris", 1, memory=GIB), candidates)
    assert placement.replicas == [ReplicaKey("a", 1)]


def test_servers_holding_the_model_are_tried_first():
    candidates = [replica("a", 0, free=9 * GIB), replica("b", 0, free=GIB, models=("iris",))]
    assert place(ModelDemand("iris", 1), candidates).replicas == [ReplicaKey("b", 0)]


def test_draining_replicas_and_explainers():
    candidates = [replica("a", 0, draining=True), replica("a", 1)]
    assert place(ModelDemand("iris", 1), candidates).replicas == [ReplicaKey("a", 1)]
    explainer = ModelDemand("explain", 1, explainer=True)
    assert place(explainer, candidates).failure == NOT_ENOUGH_REPLICAS
    with_alibi = [replica("a", 0, capabilities=("alibi-explain",))]
    assert place(explainer, with_alibi).replicas == [ReplicaKey("a", 0)]


def test_no_candidates_and_zero_replicas():
    assert place(ModelDemand("iris", 1), []).failure == NO_MATCHING_SERVERS
    assert place(ModelDemand("iris", 0), []).replicas == []
