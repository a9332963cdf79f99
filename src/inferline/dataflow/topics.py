"""Topic names, message keys and headers as Seldon Core 2 writes them (reference b.1-b.3), so
Seldon users' Kafka tooling reads our topics unchanged."""

from dataclasses import dataclass

INPUTS = "inputs"
OUTPUTS = "outputs"

# Headers.
PIPELINE_HEADER = "pipeline"
PIPELINE_VERSION_HEADER = "x-pipeline-version"
REQUEST_ID_HEADER = "x-request-id"
ERROR_HEADER = "seldon-pipeline-errors"
# Headers that stay where they are set: routing state of one hop, not request metadata.
NOT_PROPAGATED = frozenset({"x-seldon-route", "x-seldon-alibi-type", "x-seldon-alibi-method"})


@dataclass(frozen=True, slots=True)
class TopicNames:
    prefix: str = "seldon"
    namespace: str = "default"

    def model(self, name: str, direction: str) -> str:
        return f"{self.prefix}.{self.namespace}.model.{name}.{direction}"

    def pipeline(self, name: str, direction: str) -> str:
        return f"{self.prefix}.{self.namespace}.pipeline.{name}.{direction}"

    @property
    def errors(self) -> str:
        return f"{self.prefix}.{self.namespace}.errors.errors"


def message_key(partition: int, resource: str, request_id: str) -> bytes:
    """`<partition>.<resource>.<request id>`: every hop keeps it, and writes to its partition."""
    return f"{partition}.{resource}.{request_id}".encode()


def key_partition(key: bytes | None, partitions: int) -> int | None:
    """The partition a key names in its prefix, if it names a valid one."""
    if not key:
        return None
    head = key.split(b".", 1)[0]
    if head.isdigit() and int(head) < partitions:
        return int(head)
    return None


def propagated_headers(headers) -> list[tuple[str, bytes]]:
    """The `x-*` headers that travel with a request from hop to hop."""
    return [
        (name, value)
        for name, value in headers
        if name.startswith("x-") and name not in NOT_PROPAGATED and name != PIPELINE_VERSION_HEADER
    ]
