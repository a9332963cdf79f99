"""How the CLI shows things: rich tables for people, JSON on request."""

from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

# soft_wrap: a long line stays one line when there is no terminal (scripts, CI, files).
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)


def print_json(doc: Any) -> None:
    console.print_json(orjson.dumps(doc).decode())


def print_table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)


def model_rows(statuses: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            s["modelName"],
            s["version"],
            s["state"],
            f"{s['availableReplicas']}/{s['desiredReplicas']}",
            s["versions"][0]["serverName"] if s["versions"] else "",
            s["reason"],
        ]
        for s in statuses
    ]


MODEL_COLUMNS = ["model", "version", "state", "replicas", "server", "reason"]


def server_rows(statuses: list[dict[str, Any]]) -> list[list[Any]]:
    return [[s["serverName"], s["availableReplicas"], s["loadedModels"]] for s in statuses]


SERVER_COLUMNS = ["server", "replicas", "models"]
