"""The local artifact cache: a remote artifact is downloaded once per machine and version.

An entry is keyed by the URI and a version token the back end reads from the store before
downloading (ETags, generations, sizes, Last-Modified), so a reload or a second replica on the
same machine finds the files already here, and a new upload at the same URI is a new entry.

Layout under the root (`$INFERLINE_CACHE_DIR`, else `~/.cache/inferline/artifacts`):

    <sha256(uri)[:16]>/uri.txt                 the URI, for people looking around
    <sha256(uri)[:16]>/<sha256(version)[:16]>/meta.json
    <sha256(uri)[:16]>/<sha256(version)[:16]>/files/<name>   the artifact (a file or a folder)

An entry is written into a scratch folder and renamed into place, so a reader sees all of it or
none of it, and a lock file per entry makes concurrent fetchers (threads or processes) wait for
the one download instead of repeating it. Old versions are not deleted: a server on this machine
may still be reading them. Removing the root (or one URI's folder) while no server is loading is
safe.
"""

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

try:
    import fcntl
except ImportError:  # Windows: the atomic rename alone keeps entries whole
    fcntl = None

FILES = "files"
META = "meta.json"


def cache_dir() -> Path:
    configured = os.environ.get("INFERLINE_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "inferline" / "artifacts"


def without_password(uri: str) -> str:
    """`uri` with any `user:password@` taken out, for logs, messages and files."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ArtifactCache:
    def __init__(self, root: Path | None = None):
        self._root = root

    @property
    def root(self) -> Path:
        # Read at use, not at construction: the back ends are built at import time.
        return self._root if self._root is not None else cache_dir()

    def uri_dir(self, uri: str) -> Path:
        return self.root / _digest(uri)

    def entry_dir(self, uri: str, version: str) -> Path:
        return self.uri_dir(uri) / _digest(version)

    def get(self, uri: str, version: str, fill: Callable[[Path], Path]) -> Path:
        """The cached artifact for `uri` at `version`, calling `fill` to download it if absent.

        `fill(folder)` writes the artifact under the empty `folder` and returns its path there.
        """
        entry = self.entry_dir(uri, version)
        found = _read_entry(entry)
        if found is not None:
            return found
        entry.parent.mkdir(parents=True, exist_ok=True)
        with _locked(entry.with_name(entry.name + ".lock")):
            found = _read_entry(entry)  # another fetcher may have finished while we waited
            if found is not None:
                return found
            scratch = Path(tempfile.mkdtemp(prefix=f".tmp-{entry.name}-", dir=entry.parent))
            try:
                files = scratch / FILES
                files.mkdir()
                artifact = fill(files)
                meta = {
                    "uri": without_password(uri),
                    "version": version,
                    "path": artifact.relative_to(scratch).as_posix(),
                    "fetched": time.time(),
                }
                (scratch / META).write_text(json.dumps(meta, indent=1))
                uri_file = entry.parent / "uri.txt"
                if not uri_file.exists():
                    uri_file.write_text(without_password(uri) + "\n")
                try:
                    scratch.rename(entry)
                except OSError:
                    # Without a file lock (Windows) another process may have renamed first.
                    found = _read_entry(entry)
                    if found is None:
                        raise
                    return found
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        found = _read_entry(entry)
        assert found is not None
        return found

    def latest(self, uri: str) -> Path | None:
        """The most recently fetched version of `uri`, whatever its version; None if none is."""
        folder = self.uri_dir(uri)
        if not folder.is_dir():
            return None
        entries = [
            p
            for p in folder.iterdir()
            if p.is_dir() and not p.name.startswith(".") and (p / META).exists()
        ]
        for entry in sorted(entries, key=lambda p: (p / META).stat().st_mtime, reverse=True):
            found = _read_entry(entry)
            if found is not None:
                return found
        return None


def _read_entry(entry: Path) -> Path | None:
    try:
        meta = json.loads((entry / META).read_text())
    except (OSError, ValueError):
        return None
    path = entry / meta["path"]
    return path if path.exists() else None


_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    if fcntl is None:
        with _THREAD_LOCKS_GUARD:
            lock = _THREAD_LOCKS.setdefault(str(path), threading.Lock())
        with lock:
            yield
        return
    # flock is held per open file, so threads of one process exclude each other too.
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
