"""Model artifacts on local disk: plain paths and `file://` URIs."""

from pathlib import Path
from urllib.parse import unquote, urlparse

from inferline.protocol.errors import InvalidModelURI


class LocalStorage:
    def fetch(self, uri: str, base: Path | None) -> Path:
        parsed = urlparse(uri)
        raw = unquote(parsed.netloc + parsed.path) if parsed.scheme == "file" else uri
        path = Path(raw).expanduser()
        if not path.is_absolute() and base is not None:
            path = base / path
        if not path.exists():
            raise InvalidModelURI(f"model URI '{uri}' points to {path}, which does not exist")
        return path.resolve()
