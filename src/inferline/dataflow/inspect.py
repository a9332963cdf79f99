"""`pipeline inspect`: read back what flowed through a pipeline's topics (reference b.15).

Expressions: `P` (every topic of the pipeline), `P.inputs` / `P.outputs`, `P.<step>` (the step's
inputs and outputs), `P.<step>.<inputs|outputs>`, `P.<step>.<inputs|outputs>.<tensor>`. Only
messages whose `pipeline` header is P are shown; payloads are decoded to V2 JSON.
"""

from dataclasses import dataclass
from typing import Any

import orjson

from inferline.bus.base import Bus, Message
from inferline.dataflow import messages
from inferline.dataflow.plan import REQUEST, RESPONSE
from inferline.dataflow.topics import (
    ERROR_HEADER,
    INPUTS,
    OUTPUTS,
    PIPELINE_HEADER,
    TopicNames,
)
from inferline.protocol import json_encoding
from inferline.protocol.errors import BadRequest
from inferline.protocol.types import InferenceRequest, InferenceResponse


@dataclass(frozen=True, slots=True)
class _Target:
    label: str  # what the user asked for, e.g. "tfsimples.tfsimple1.outputs"
    topic: str
    payload: str
    tensor: str | None = None


def resolve(expression: str, steps: list[str], topics: TopicNames) -> list[_Target]:
    parts = expression.split(".")
    pipeline, rest = parts[0], parts[1:]
    if not rest:
        targets = [
            _Target(f"{pipeline}.{INPUTS}", topics.pipeline(pipeline, INPUTS), REQUEST),
        ]
        for step in steps:
            targets += resolve(f"{pipeline}.{step}", steps, topics)
        targets.append(
            _Target(f"{pipeline}.{OUTPUTS}", topics.pipeline(pipeline, OUTPUTS), RESPONSE)
        )
        return targets
    if rest[0] in (INPUTS, OUTPUTS) and len(rest) == 1:
        payload = REQUEST if rest[0] == INPUTS else RESPONSE
        return [_Target(expression, topics.pipeline(pipeline, rest[0]), payload)]
    step = rest[0]
    if step not in steps:
        raise BadRequest(f"pipeline '{pipeline}' has no step '{step}' (steps: {', '.join(steps)})")
    if len(rest) == 1:
        return [
            _Target(f"{pipeline}.{step}.{INPUTS}", topics.model(step, INPUTS), REQUEST),
            _Target(f"{pipeline}.{step}.{OUTPUTS}", topics.model(step, OUTPUTS), RESPONSE),
        ]
    direction = rest[1]
    if direction not in (INPUTS, OUTPUTS) or len(rest) > 3:
        raise BadRequest(
            f"invalid inspect expression '{expression}': expected "
            "P[.<step>[.<inputs|outputs>[.<tensor>]]] or P.<inputs|outputs>"
        )
    payload = REQUEST if direction == INPUTS else RESPONSE
    tensor = rest[2] if len(rest) == 3 else None
    return [_Target(expression, topics.model(step, direction), payload, tensor)]


async def inspect(
    bus: Bus,
    topics: TopicNames,
    pipeline: str,
    steps: list[str],
    expression: str,
    request_id: str | None = None,
    offset: int = 1,
) -> list[dict[str, Any]]:
    """Per target, the last `offset` messages of each partition (or, with `request_id`, those
    of that request among the last 1000)."""
    existing = await bus.topics()
    results = []
    for target in resolve(expression, steps, topics):
        if target.topic not in existing:
            results.append({"name": target.label, "topic": target.topic, "messages": []})
            continue
        count = 1000 if request_id else max(1, offset)
        found = [
            _describe(m, target)
            for m in await bus.read_last(target.topic, count)
            if m.header(PIPELINE_HEADER) == pipeline.encode()
            and (request_id is None or _matches(m, request_id))
        ]
        results.append({"name": target.label, "topic": target.topic, "messages": found})
    return results


def _matches(message: Message, request_id: str) -> bool:
    key = (message.key or b"").decode(errors="replace")
    return key == request_id or key.endswith(f".{request_id}")


def _describe(message: Message, target: _Target) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "key": (message.key or b"").decode(errors="replace"),
        "partition": message.partition,
        "offset": message.offset,
        "headers": {k: v.decode(errors="replace") for k, v in message.headers},
    }
    if message.header(ERROR_HEADER) is not None:
        doc["error"] = message.value.decode(errors="replace")
        return doc
    try:
        decoded = messages.decode(message.value, target.payload)
    except Exception as exc:
        doc["error"] = f"undecodable payload: {exc}"
        return doc
    tensors = decoded.tensors
    if target.tensor is not None:
        tensors = [t for t in tensors if t.name == target.tensor]
    if target.payload == REQUEST:
        body, _ = json_encoding.encode_request(
            InferenceRequest(tensors, decoded.id, decoded.parameters)
        )
    else:
        body, _ = json_encoding.encode_response(
            InferenceResponse(decoded.model_name, tensors, None, decoded.id, decoded.parameters)
        )
    doc["payload"] = orjson.loads(body)
    return doc
