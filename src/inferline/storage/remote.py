"""Object-store artifacts: `s3://bucket/prefix` through s3fs, `gs://bucket/prefix` through gcsfs.

A URI names one object or a prefix ("folder"); a prefix is downloaded whole, keeping its layout,
so a folder with `model-settings.json` or numbered version folders arrives as it was uploaded.
One object named `.tar.gz`, `.tgz`, `.tar` or `.zip` is unpacked into a folder.

Every fetch lists the URI first (one LIST request for a prefix) and keys the local cache by the
URI plus every object's ETag / generation and size, so an unchanged artifact is never downloaded
twice on one machine and a re-upload is picked up on the next load. If the store cannot be
reached, the last version fetched for that URI is used (with a warning); a missing object or
refused credentials are never papered over that way.

Credentials, S3: the storage secret's rclone parameters (see `inferline.storage.credentials`),
else boto's own chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN,
AWS_PROFILE, instance roles); with no credentials at all the bucket is read anonymously. The
endpoint of an S3-compatible store (MinIO, Ceph, moto) is the secret's `endpoint`, else
`$INFERLINE_S3_ENDPOINT`, else `$AWS_ENDPOINT_URL_S3` / `$AWS_ENDPOINT_URL`.
Credentials, GCS: the secret's `service_account_credentials` (JSON text),
`service_account_file` or `anonymous: true`, else Google's default chain
(GOOGLE_APPLICATION_CREDENTIALS, gcloud, the metadata server). The endpoint is
`$INFERLINE_GCS_ENDPOINT`, else `$STORAGE_EMULATOR_HOST` (an emulator, read anonymously).

s3fs and gcsfs are optional extras (`inferline[s3]`, `inferline[gcs]`), imported on first use.
"""

import importlib
import json
import logging
import os
import socket
import threading
from collections import OrderedDict
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from inferline.protocol.errors import InvalidModelURI
from inferline.storage.archives import archive_stem, unpack
from inferline.storage.cache import ArtifactCache, without_password
from inferline.storage.credentials import flag, remote_config

log = logging.getLogger(__name__)

MISSING, DENIED, INVALID, UNREACHABLE = "missing", "denied", "invalid", "unreachable"

_AUTH_ERRORS = {
    "NoCredentialsError",
    "PartialCredentialsError",
    "CredentialRetrievalError",
    "DefaultCredentialsError",
    "RefreshError",
}


def classify(exc: BaseException) -> str:
    """What a store's exception means for the caller: missing, denied, invalid or unreachable."""
    if isinstance(exc, FileNotFoundError):
        return MISSING
    if isinstance(exc, PermissionError):
        return DENIED
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & _AUTH_ERRORS:
        return DENIED
    if "ParamValidationError" in names:  # botocore's check of a bucket or key name
        return INVALID
    if "GoogleAuthError" in names and "TransportError" not in names:
        return DENIED
    code = getattr(exc, "code", None)
    if isinstance(code, int) and 400 <= code < 500 and code not in (408, 429):
        return DENIED if code in (401, 403) else INVALID
    if isinstance(exc, OSError) and str(exc).startswith(("Forbidden", "Unauthorized")):
        return DENIED  # gcsfs's 403
    if isinstance(exc, ValueError):
        return INVALID
    return UNREACHABLE


def explain(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


class ObjectStoreStorage:
    """What S3 and GCS share: list, key the cache by the listing, download, unpack."""

    kind = ""  # the credentials kind: "s3", "gs"
    module = ""  # the fsspec implementation to import
    extra = ""  # the pip extra that installs it

    def __init__(self, cache: ArtifactCache | None = None):
        self.cache = cache or ArtifactCache()

    def filesystem(self, config: dict[str, Any] | None, anonymous: bool = False):
        raise NotImplementedError

    def host(self) -> str | None:
        """The host every request goes to when it is known up front, checked to resolve before
        the first request (see `_check_resolves`); None: no check."""
        return None

    def fetch(self, uri: str, base: Path | None) -> Path:
        label = without_password(uri)
        path = _object_path(uri)
        if not path:
            raise InvalidModelURI(f"model URI '{label}' names no bucket")
        config = remote_config(self.kind)
        _import(self.module, self.extra, self.kind)  # a missing library is said first
        try:
            # Before the client: making one may already ask the network (Google's credentials).
            _check_resolves(self.host())
            files, fs = self._list(self.filesystem(config), path, config)
        except InvalidModelURI:
            raise
        except Exception as exc:
            reason = classify(exc)
            if reason == MISSING:
                raise InvalidModelURI(
                    f"model URI '{label}' names no object or folder: {explain(exc)}"
                ) from None
            if reason == DENIED:
                raise InvalidModelURI(
                    f"cannot read model URI '{label}': access refused: {explain(exc)}"
                ) from None
            if reason == INVALID:
                raise InvalidModelURI(f"cannot read model URI '{label}': {explain(exc)}") from None
            cached = self.cache.latest(uri)
            if cached is None:
                raise InvalidModelURI(
                    f"cannot reach the store for model URI '{label}': {explain(exc)}"
                ) from None
            log.warning(
                "cannot reach the store for %s (%s); using the copy fetched before at %s",
                label,
                explain(exc),
                cached,
            )
            return cached
        if not files:
            raise InvalidModelURI(f"model URI '{label}' names no object and no folder with objects")
        version = json.dumps(sorted((rel, _object_version(info)) for rel, info in files.items()))
        return self.cache.get(uri, version, lambda folder: self._download(fs, path, files, folder))

    def _list(self, fs, path: str, config) -> tuple[dict[str, dict], Any]:
        """The objects at `path`, keyed by their path relative to it ("" for one object)."""
        try:
            fs.invalidate_cache()  # a reused client: list afresh, always
            found = fs.find(path, detail=True)
        except Exception as exc:
            if config is not None or not {c.__name__ for c in type(exc).__mro__} & {
                "NoCredentialsError"
            }:
                raise
            # No credentials anywhere: read it as a public bucket, as the CLIs do when asked.
            log.info("no credentials for %s; reading it anonymously", path)
            fs = self.filesystem(None, anonymous=True)
            try:
                found = fs.find(path, detail=True)
            except Exception as anonymous_exc:
                if classify(anonymous_exc) != DENIED:
                    raise
                raise InvalidModelURI(
                    f"cannot read model URI '{self.kind}://{path}': no credentials were found "
                    f"and anonymous access was refused: {explain(anonymous_exc)}"
                ) from None
        files: dict[str, dict] = {}
        for name, info in found.items():
            name = name.rstrip("/")
            if info.get("type") != "file" or name == "" or str(info.get("name", "")).endswith("/"):
                continue  # folder markers
            if name == path:
                return {"": info}, fs
            relative = name[len(path) + 1 :] if name.startswith(path + "/") else None
            if not relative or any(part in ("", ".", "..") for part in relative.split("/")):
                raise InvalidModelURI(
                    f"object '{self.kind}://{name}' cannot be stored under a local folder"
                )
            files[relative] = info
        return files, fs

    def _download(self, fs, path: str, files: dict[str, dict], folder: Path) -> Path:
        name = PurePosixPath(path).name
        if set(files) == {""}:
            stem = archive_stem(name)
            target = folder / (f".download-{name}" if stem else name)
            self._get(fs, [path], [target], path)
            if stem is None:
                return target
            model = unpack(target, folder / stem, f"{self.kind}://{path}")
            target.unlink()
            return model
        root = folder / name
        remote = [f"{path}/{relative}" for relative in sorted(files)]
        local = [root.joinpath(*relative.split("/")) for relative in sorted(files)]
        for target in local:
            target.parent.mkdir(parents=True, exist_ok=True)
        self._get(fs, remote, local, path)
        log.info(
            "downloaded %s://%s (%d files, %d bytes)",
            self.kind,
            path,
            len(files),
            sum(int(info.get("size") or 0) for info in files.values()),
        )
        return root

    def _get(self, fs, remote: list[str], local: list[Path], path: str) -> None:
        try:
            fs.get(remote, [str(p) for p in local])
        except Exception as exc:
            raise InvalidModelURI(
                f"downloading {self.kind}://{path} failed: {explain(exc)}"
            ) from None


class S3Storage(ObjectStoreStorage):
    kind = "s3"
    module = "s3fs"
    extra = "s3"

    def filesystem(self, config: dict[str, Any] | None, anonymous: bool = False):
        s3fs = _import(self.module, self.extra, self.kind)
        options: dict[str, Any] = {"skip_instance_cache": True, "use_listings_cache": False}
        client: dict[str, Any] = {}
        endpoint = (
            os.environ.get("INFERLINE_S3_ENDPOINT")
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
        )
        path_style = None
        if config is not None:
            endpoint = config.get("endpoint") or endpoint
            if config.get("region"):
                client["region_name"] = config["region"]
            if "force_path_style" in config:
                path_style = flag(config["force_path_style"])
            if not flag(config.get("env_auth")):
                key, secret = config.get("access_key_id"), config.get("secret_access_key")
                if key and secret:
                    options.update(
                        key=key, secret=secret, token=config.get("session_token") or None
                    )
                else:
                    anonymous = True  # rclone: no keys and no env_auth means a public bucket
        if endpoint:
            options["endpoint_url"] = endpoint
            # rclone's default for S3-compatible stores, which rarely serve bucket subdomains.
            if path_style is None:
                path_style = True
        if path_style:
            options["config_kwargs"] = {"s3": {"addressing_style": "path"}}
        if client:
            options["client_kwargs"] = client
        options["anon"] = anonymous
        return _reuse(s3fs.S3FileSystem, options, "AWS_")


class GCSStorage(ObjectStoreStorage):
    kind = "gs"
    module = "gcsfs"
    extra = "gcs"

    def host(self) -> str | None:
        endpoint = os.environ.get("INFERLINE_GCS_ENDPOINT") or os.environ.get(
            "STORAGE_EMULATOR_HOST"
        )
        if not endpoint:
            return "storage.googleapis.com"
        return urlsplit(endpoint if "//" in endpoint else f"//{endpoint}").hostname

    def filesystem(self, config: dict[str, Any] | None, anonymous: bool = False):
        gcsfs = _import(self.module, self.extra, self.kind)
        options: dict[str, Any] = {"skip_instance_cache": True, "use_listings_cache": False}
        endpoint = os.environ.get("INFERLINE_GCS_ENDPOINT")
        emulated = bool(endpoint or os.environ.get("STORAGE_EMULATOR_HOST"))
        token: Any = "anon" if anonymous or emulated else None
        if config is not None:
            if config.get("service_account_credentials"):
                try:
                    token = json.loads(config["service_account_credentials"])
                except ValueError:
                    raise InvalidModelURI(
                        "the storage secret's service_account_credentials is not JSON"
                    ) from None
            elif config.get("service_account_file"):
                token = str(Path(config["service_account_file"]).expanduser())
            elif flag(config.get("anonymous")):
                token = "anon"
            elif flag(config.get("env_auth")):
                token = None
            if config.get("project_number"):
                options["project"] = str(config["project_number"])
        if endpoint:
            options["endpoint_url"] = endpoint
        options["token"] = token
        # The default class asks a gRPC control API for each bucket's layout, which emulators
        # do not serve (a minute's timeout each); the core class reads plain buckets alike.
        cls = (
            importlib.import_module("gcsfs.core").GCSFileSystem if emulated else gcsfs.GCSFileSystem
        )
        return _reuse(cls, options, "GOOGLE_", "STORAGE_EMULATOR_HOST", "GCE_", "NO_GCE_CHECK")


_FILESYSTEMS: "OrderedDict[str, Any]" = OrderedDict()
_FILESYSTEMS_LOCK = threading.Lock()
_FILESYSTEMS_KEPT = 16


def _reuse(cls, options: dict[str, Any], *environment: str):
    """One file system per class, options and credential environment, kept for later fetches.

    A new client costs a few hundred milliseconds (loading the service description, resolving
    credentials); the environment is part of the key so changed credentials take effect.
    Listings are never cached (`use_listings_cache=False` / fresh `find`), only clients.
    """
    env = sorted((k, v) for k, v in os.environ.items() if k.startswith(environment))
    key = json.dumps([cls.__module__, cls.__qualname__, os.getpid(), options, env], default=str)
    with _FILESYSTEMS_LOCK:
        fs = _FILESYSTEMS.get(key)
        if fs is not None:
            _FILESYSTEMS.move_to_end(key)
            return fs
    fs = cls(**options)
    with _FILESYSTEMS_LOCK:
        _FILESYSTEMS[key] = fs
        while len(_FILESYSTEMS) > _FILESYSTEMS_KEPT:
            _FILESYSTEMS.popitem(last=False)
    return fs


def _check_resolves(host: str | None) -> None:
    """A ConnectionError (unreachable: the cached copy may serve) if `host` has no address.

    gcsfs retries a request whose host does not resolve six times with backoff, so a model on a
    machine without DNS for the store took about 50 s to fail; a name that does not resolve
    now fails at once."""
    if not host:
        return
    try:
        socket.getaddrinfo(host, None)
    except socket.gaierror as exc:
        raise ConnectionError(
            f"the store's host {host} does not resolve ({exc.strerror})"
        ) from None


def _import(module: str, extra: str, scheme: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise InvalidModelURI(
            f"reading {scheme}:// model URIs needs {module}, which is not installed: "
            f'pip install "inferline[{extra}]"'
        ) from None


def _object_path(uri: str) -> str:
    parts = urlsplit(uri)
    return (parts.netloc + parts.path).strip("/")


def _object_version(info: dict[str, Any]) -> list[str]:
    """What changes when an object is replaced: its ETag or generation, else its time; its size."""
    tag = info.get("ETag") or info.get("etag") or info.get("md5Hash") or ""
    generation = info.get("generation") or info.get("VersionId") or ""
    if not tag and not generation:
        tag = str(info.get("LastModified") or info.get("updated") or info.get("mtime") or "")
    return [str(tag).strip('"'), str(generation), str(info.get("size", ""))]
