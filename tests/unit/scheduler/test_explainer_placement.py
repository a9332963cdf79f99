"""Explainers go where their type can run: anchors (and any other alibi type) only on servers
with Alibi Explain (`alibi-explain`), the types our permissive explainer runtime implements on
those or on any server offering `explainer`."""

import pytest

from inferline.scheduler.placement import (
    NOT_ENOUGH_REPLICAS,
    ModelDemand,
    ReplicaCandidate,
    ReplicaKey,
    place,
)

GIB = 1 << 30
PLAIN = ReplicaCandidate(ReplicaKey("plain", 0), frozenset({"sklearn", "explainer"}), GIB)
ALIBI = ReplicaCandidate(ReplicaKey("alibi", 0), frozenset({"sklearn", "alibi-explain"}), GIB)


def explainer(kind: str | None) -> ModelDemand:
    return ModelDemand("explain", 1, explainer=True, explainer_type=kind)


@pytest.mark.parametrize("kind", ["anchor_tabular", "anchor_text", "integrated_gradients", None])
def test_alibi_types_need_a_server_with_alibi(kind):
    assert place(explainer(kind), [PLAIN]).failure == NOT_ENOUGH_REPLICAS
    assert place(explainer(kind), [PLAIN, ALIBI]).replicas == [ReplicaKey("alibi", 0)]


@pytest.mark.parametrize("kind", ["kernel_shap", "feature_importance"])
def test_permissive_types_run_on_either(kind):
    assert place(explainer(kind), [PLAIN]).replicas == [ReplicaKey("plain", 0)]
    assert place(explainer(kind), [ALIBI]).replicas == [ReplicaKey("alibi", 0)]


def test_a_model_that_is_no_explainer_ignores_the_explainer_tags():
    bare = ReplicaCandidate(ReplicaKey("bare", 0), frozenset({"sklearn"}), GIB)
    assert place(ModelDemand("iris", 1), [bare]).replicas == [ReplicaKey("bare", 0)]
