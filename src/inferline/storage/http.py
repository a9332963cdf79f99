"""`http://` and `https://` artifacts: one file, or one `.tar.gz` / `.tgz` / `.tar` / `.zip`
archive unpacked into a model folder (HTTP has no listing, so a URL cannot name a folder).

Each fetch asks the server for the file's ETag, Last-Modified and length first (HEAD, or a GET
whose body is not read when HEAD is refused, as presigned URLs do) and keys the local cache by
the URL plus those, so an unchanged file is downloaded once per machine. A server that sends
neither ETag nor Last-Modified gives nothing to compare: its file is treated as immutable and
downloaded once per URL (change the URL, or clear the cache, to pick up a new file). If the
server cannot be reached, the last copy fetched for the URL is used, with a warning.

Request headers (an `Authorization` token, say) come from the storage secret's `http` remote:
`headers` as rclone writes them (`"Key,Value,Key,Value"`) or as a mapping. `user:password@` in
the URL is sent as basic auth and kept out of messages and the cache's files.
"""

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from inferline.protocol.errors import InvalidModelURI
from inferline.storage.archives import archive_stem, unpack
from inferline.storage.cache import ArtifactCache, without_password
from inferline.storage.credentials import remote_config

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
CHUNK = 1 << 20


def _client(headers: dict[str, str]) -> "httpx.Client":
    # Imported here: every server imports the storage registry, few fetch over HTTP.
    import httpx

    timeout = httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
    return httpx.Client(follow_redirects=True, timeout=timeout, headers=headers)


class _Unavailable(Exception):
    """The server answered, but only that it cannot serve now (5xx, 429)."""


class HTTPStorage:
    def __init__(self, cache: ArtifactCache | None = None):
        self.cache = cache or ArtifactCache()

    def fetch(self, uri: str, base: Path | None) -> Path:
        label = without_password(uri)
        name = unquote(urlsplit(uri).path.rsplit("/", 1)[-1])
        if not name:
            raise InvalidModelURI(
                f"model URI '{label}' names no file: an http(s) URI names one file or one "
                "archive (.tar.gz, .tgz, .tar, .zip)"
            )
        import httpx

        headers = _headers(remote_config("http"))
        try:
            with _client(headers) as client:
                version = _probe(client, uri, label)
        except (httpx.TransportError, _Unavailable) as exc:
            cached = self.cache.latest(uri)
            if cached is None:
                raise InvalidModelURI(f"cannot read model URI '{label}': {exc}") from None
            log.warning(
                "cannot reach %s (%s); using the copy fetched before at %s", label, exc, cached
            )
            return cached
        return self.cache.get(
            uri, version, lambda folder: self._download(uri, label, name, headers, folder)
        )

    def _download(
        self, uri: str, label: str, name: str, headers: dict[str, str], folder: Path
    ) -> Path:
        import httpx

        stem = archive_stem(name)
        target = folder / (f".download-{name}" if stem else name)
        try:
            with (
                _client(headers) as client,
                client.stream("GET", uri) as response,
            ):
                _check(response, label)
                with open(target, "wb") as out:
                    for chunk in response.iter_bytes(CHUNK):
                        out.write(chunk)
        except (httpx.HTTPError, _Unavailable) as exc:
            raise InvalidModelURI(f"downloading '{label}' failed: {exc}") from None
        log.info("downloaded %s (%d bytes)", label, target.stat().st_size)
        if stem is None:
            return target
        model = unpack(target, folder / stem, label)
        target.unlink()
        return model


def _probe(client: "httpx.Client", uri: str, label: str) -> str:
    """The file's version as the server tells it, without downloading the body."""
    response = client.head(uri)
    if not response.is_success:
        # HEAD refused (405, or 403 on a URL presigned for GET only): ask with GET instead.
        with client.stream("GET", uri) as streamed:
            _check(streamed, label)
            response = streamed
    tag = response.headers.get("etag", "")
    modified = response.headers.get("last-modified", "")
    if not tag and not modified:
        log.info("%s has no ETag or Last-Modified: cached as immutable", label)
        return ""
    return f"{tag}|{modified}|{response.headers.get('content-length', '')}"


def _check(response: "httpx.Response", label: str) -> None:
    import httpx

    if response.is_success:
        return
    status = response.status_code
    try:
        detail = " ".join(response.read().decode("utf-8", "replace").split())[:300]
    except httpx.HTTPError:
        detail = ""
    detail = f": {detail}" if detail else ""
    if status in (404, 410):
        raise InvalidModelURI(f"model URI '{label}' not found (HTTP {status})")
    if status in (401, 403):
        raise InvalidModelURI(
            f"cannot read model URI '{label}': access refused (HTTP {status}){detail}"
        )
    message = f"HTTP {status} {response.reason_phrase}{detail}"
    if status >= 500 or status == 429:
        raise _Unavailable(message)
    raise InvalidModelURI(f"cannot read model URI '{label}': {message}")


def _headers(config: dict[str, Any] | None) -> dict[str, str]:
    if not config or not config.get("headers"):
        return {}
    raw = config["headers"]
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    items = [item.strip() for item in str(raw).split(",")]
    if len(items) % 2:
        raise InvalidModelURI(
            "the storage secret's http 'headers' must be pairs: 'Key,Value,Key,Value'"
        )
    return dict(zip(items[::2], items[1::2], strict=True))
