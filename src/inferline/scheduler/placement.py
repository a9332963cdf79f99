"""Where a model's replicas go: Seldon Core 2's placement rules as one pure function.

Server filters (all must pass): the server has connected replicas; a model pinned with `server`
goes only there; every requirement is among the server's capabilities. Servers already holding
the model are tried first. Replica filters: enough free memory (or the replica already holds the
model), not draining, explainers only where they can run (see `explainer_capabilities`).
Replicas are ordered holding-the-model first, then most free memory, then lowest index; all
replicas of one model sit on distinct replicas of one server. With `minReplicas`, fewer than
`replicas` is acceptable.
"""

from dataclasses import dataclass, field

NO_MATCHING_SERVERS = "Failed to schedule model as no matching servers are available"
NOT_ENOUGH_REPLICAS = "Failed to schedule model as no matching server had enough suitable replicas"

EXPLAINER_CAPABILITY = "alibi-explain"  # Seldon's: the server has Alibi Explain
# Our permissively licensed explainer runtime (inferline.runtimes.explainer), which every server
# offers, runs these explainer types without Alibi.
PERMISSIVE_EXPLAINER_CAPABILITY = "explainer"
PERMISSIVE_EXPLAINER_TYPES = frozenset({"kernel_shap", "feature_importance"})


def explainer_capabilities(explainer_type: str | None) -> frozenset[str]:
    """The capabilities any one of which lets a replica run an explainer of this type: Seldon's
    `alibi-explain` for all, and ours for the types our explainer runtime implements."""
    if explainer_type in PERMISSIVE_EXPLAINER_TYPES:
        return frozenset({EXPLAINER_CAPABILITY, PERMISSIVE_EXPLAINER_CAPABILITY})
    return frozenset({EXPLAINER_CAPABILITY})


@dataclass(slots=True, frozen=True, order=True)
class ReplicaKey:
    server: str
    index: int


@dataclass(slots=True)
class ReplicaCandidate:
    key: ReplicaKey
    capabilities: frozenset[str]
    # Memory still free for new models, overcommit included, in bytes.
    free_memory: int
    # Models (by name) this replica holds or is assigned, any version.
    models: frozenset[str] = frozenset()
    draining: bool = False


@dataclass(slots=True)
class ModelDemand:
    name: str
    replicas: int
    min_replicas: int = 0
    memory: int = 0
    requirements: tuple[str, ...] = ()
    server: str | None = None
    explainer: bool = False
    explainer_type: str | None = None


@dataclass(slots=True)
class Placement:
    replicas: list[ReplicaKey] = field(default_factory=list)
    # Set when the model could not be placed at all; partial placements carry no reason.
    failure: str | None = None


def place(demand: ModelDemand, candidates: list[ReplicaCandidate]) -> Placement:
    if demand.replicas <= 0:
        return Placement()
    servers: dict[str, list[ReplicaCandidate]] = {}
    for candidate in candidates:
        servers.setdefault(candidate.key.server, []).append(candidate)

    matching = [
        name
        for name, replicas in sorted(servers.items())
        if (demand.server is None or name == demand.server)
        and set(demand.requirements) <= _capabilities(replicas)
    ]
    if not matching:
        return Placement(failure=NO_MATCHING_SERVERS)
    # Servers that already hold the model come first, so a rescale or a new version stays put.
    matching.sort(key=lambda name: not any(demand.name in r.models for r in servers[name]))

    best: list[ReplicaKey] = []
    for name in matching:
        suitable = sorted(
            (r for r in servers[name] if _suitable(r, demand)),
            key=lambda r: (demand.name not in r.models, -r.free_memory, r.key.index),
        )
        chosen = [r.key for r in suitable[: demand.replicas]]
        if len(chosen) == demand.replicas:
            return Placement(chosen)
        if len(chosen) > len(best):
            best = chosen
    if demand.min_replicas > 0 and len(best) >= demand.min_replicas:
        return Placement(best)
    return Placement(failure=NOT_ENOUGH_REPLICAS)


def _capabilities(replicas: list[ReplicaCandidate]) -> set[str]:
    capabilities: set[str] = set()
    for replica in replicas:
        capabilities |= replica.capabilities
    return capabilities


def _suitable(replica: ReplicaCandidate, demand: ModelDemand) -> bool:
    if replica.draining:
        return False
    runs_it = explainer_capabilities(demand.explainer_type)
    if demand.explainer and not runs_it & replica.capabilities:
        return False
    return demand.name in replica.models or replica.free_memory >= demand.memory
