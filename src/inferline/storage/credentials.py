"""Storage credentials from a named secret: our side of Seldon's `secretName`.

A Seldon Model's `secretName` names a Kubernetes Secret that holds one rclone remote, written as
YAML (`type: s3`, `name: ...`, `parameters: {access_key_id: ..., endpoint: ...}`). Here a secret
is a file in `$INFERLINE_STORAGE_SECRET_DIR`, looked up as `<name>`, `<name>.yaml`, `<name>.yml`
or `<name>.json`, or a folder `<name>/` with one file per key (how Kubernetes mounts a Secret).
Each file holds that YAML, a flat mapping of the parameters with a `type`, or rclone's own INI
config (`[remote]` sections). The remote whose `type` fits the URI's scheme is used.

Which secret applies: the one set with `storage_secret(name)` around a fetch (how a Model's
`secretName` is passed), else `$INFERLINE_STORAGE_SECRET` (one secret for every model, as
Seldon's preloaded rclone secrets are), else none: credentials then come from the environment.
A model's own secret must hold a remote for its URI's store; the shared one may not, and then
the environment's credentials are used.
"""

import configparser
import contextlib
import json
import os
import re
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from inferline.protocol.errors import InvalidModelURI

_SECRET: ContextVar[str | None] = ContextVar("inferline_storage_secret", default=None)

# Kubernetes object names; also keeps a secret name from walking out of the secret folder.
_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")

# rclone's type names for each scheme's remote.
REMOTE_TYPES = {
    "s3": ("s3",),
    "gs": ("google cloud storage", "gcs", "gs"),
    "http": ("http", "https"),
}


@contextlib.contextmanager
def storage_secret(name: str | None) -> Iterator[None]:
    """Fetches inside this block use the secret `name` (None: the default one, if any)."""
    token = _SECRET.set(name or None)
    try:
        yield
    finally:
        _SECRET.reset(token)


def secret_name() -> str | None:
    return _SECRET.get() or os.environ.get("INFERLINE_STORAGE_SECRET") or None


def remote_config(kind: str) -> dict[str, Any] | None:
    """The parameters of the secret's remote for `kind` (`s3`, `gs`, `http`); None if no secret.

    Parameter names are rclone's (`access_key_id`, `secret_access_key`, `endpoint`, `region`,
    `env_auth`, `service_account_credentials`, `headers`, ...).
    """
    name = _SECRET.get()
    shared = not name
    if shared:
        name = os.environ.get("INFERLINE_STORAGE_SECRET")
    if not name:
        return None
    if not _NAME.match(name):
        raise InvalidModelURI(f"storage secret name '{name}' is not a valid name")
    configured = os.environ.get("INFERLINE_STORAGE_SECRET_DIR")
    if not configured:
        raise InvalidModelURI(
            f"the model uses storage secret '{name}' but INFERLINE_STORAGE_SECRET_DIR is not set"
        )
    folder = Path(configured).expanduser()
    remotes = _read_secret(folder, name)
    wanted = REMOTE_TYPES[kind]
    for remote in remotes:
        if str(remote.get("type", "")).lower() in wanted:
            return remote
    if shared:
        return None  # the secret for every model may hold remotes for other stores only
    found = ", ".join(sorted({str(r.get("type")) for r in remotes})) or "none"
    raise InvalidModelURI(
        f"storage secret '{name}' holds no remote of type {' or '.join(wanted)} (found: {found})"
    )


def _read_secret(folder: Path, name: str) -> list[dict[str, Any]]:
    candidates = [folder / name, *(folder / f"{name}{ext}" for ext in (".yaml", ".yml", ".json"))]
    for path in candidates:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            return [remote for p in files for remote in _parse(p)]
        if path.is_file():
            return _parse(path)
    raise InvalidModelURI(
        f"storage secret '{name}' not found: looked for {candidates[0]} (a file or a folder), "
        f"or that name with .yaml, .yml or .json"
    )


def _parse(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidModelURI(f"cannot read storage secret {path}: {exc.strerror}") from None
    import yaml

    try:
        doc = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError):
        doc = None
    if isinstance(doc, dict):
        if "type" not in doc and all(isinstance(v, dict) for v in doc.values()):
            return [_remote(v) for v in doc.values()]  # several remotes keyed by name
        return [_remote(doc)]
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error:
        parser = None
    if parser is not None and parser.sections():
        return [dict(parser[section]) for section in parser.sections()]
    raise InvalidModelURI(
        f"storage secret {path} is neither an rclone remote in YAML/JSON "
        "(type, parameters) nor an rclone INI config"
    )


def _remote(doc: dict[str, Any]) -> dict[str, Any]:
    """Seldon's `{type, name, parameters: {...}}` or a flat mapping, as one flat mapping."""
    parameters = doc.get("parameters")
    flat = {k: v for k, v in doc.items() if k != "parameters"}
    if isinstance(parameters, dict):
        flat.update(parameters)
    return flat


def flag(value: Any) -> bool:
    """An rclone boolean parameter (`true`, `"true"`, `"1"`, ...)."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)
