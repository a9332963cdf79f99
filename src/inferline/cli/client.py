"""What the CLI talks to: the scheduler's API and the router's data plane.

Every failure becomes a `CLIError` with one readable line, so the CLI never shows a traceback for
an unknown model, an invalid file or a scheduler that is not running.
"""

import os
import time
from typing import Any

import httpx
import orjson

DEFAULT_SCHEDULER = "127.0.0.1:9004"
DEFAULT_INFER_HOST = "127.0.0.1:9000"
DEFAULT_INFER_GRPC_HOST = "127.0.0.1:9001"


class CLIError(Exception):
    pass


def scheduler_host(flag: str | None) -> str:
    return flag or os.environ.get("INFERLINE_SCHEDULER_HOST", DEFAULT_SCHEDULER)


def infer_host(flag: str | None) -> str:
    return flag or os.environ.get("INFERLINE_INFER_HOST", DEFAULT_INFER_HOST)


def infer_grpc_host(flag: str | None) -> str:
    return flag or os.environ.get("INFERLINE_INFER_GRPC_HOST", DEFAULT_INFER_GRPC_HOST)


def error_message(response: httpx.Response) -> str:
    try:
        return str(orjson.loads(response.content)["error"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text.strip()[:200]}"


class SchedulerClient:
    def __init__(self, host: str, timeout: float = 30.0):
        self.host = host
        self._http = httpx.Client(base_url=f"http://{host}", timeout=timeout)

    def _call(self, method: str, path: str, **kwargs) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise CLIError(
                f"cannot reach the scheduler at {self.host} ({type(exc).__name__}); "
                "is `inferline up` running? (set --scheduler-host or INFERLINE_SCHEDULER_HOST)"
            ) from None
        if response.status_code >= 400:
            raise CLIError(error_message(response))
        return orjson.loads(response.content) if response.content else None

    def apply(self, text: str) -> list[dict[str, str]]:
        return self._call("POST", "/v1/resources", content=text.encode())

    def delete_all(self, text: str) -> list[dict[str, str]]:
        return self._call("DELETE", "/v1/resources", content=text.encode())

    def delete(self, plural: str, name: str) -> dict[str, str]:
        return self._call("DELETE", f"/v1/{plural}/{name}")

    def status(self, plural: str, name: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/{plural}/{name}")

    def list(self, plural: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/v1/{plural}")

    def wait_for(self, plural: str, name: str, state: str, timeout: float) -> dict[str, Any]:
        """Poll until the resource's state is `state`; CLIError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(plural, name)
            if status.get("state") == state:
                return status
            if time.monotonic() >= deadline:
                now = status.get("state", "?")
                reason = f" ({status['reason']})" if status.get("reason") else ""
                raise CLIError(
                    f"timed out after {timeout:g} s waiting for {plural[:-1]} '{name}' to be "
                    f"{state}; it is {now}{reason}"
                )
            time.sleep(0.5)


def read_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CLIError(f"{path} is not UTF-8 text") from None
