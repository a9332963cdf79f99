"""Unpacking a downloaded `.tar.gz` / `.tgz` / `.tar` / `.zip` artifact into a model folder."""

import tarfile
import zipfile
from pathlib import Path

from inferline.protocol.errors import InvalidModelURI

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip")


def archive_stem(name: str) -> str | None:
    """The folder name an archive called `name` unpacks to; None if `name` is no archive."""
    lowered = name.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lowered.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def unpack(archive: Path, folder: Path, label: str) -> Path:
    """Unpack `archive` into `folder`; a lone top-level folder in it is the model folder.

    Members that would land outside `folder` (absolute paths, `..`, links out) are refused.
    `label` names the artifact in error messages.
    """
    folder.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as bundle:
                _check_names(bundle.namelist(), folder, label)
                bundle.extractall(folder)
        else:
            with tarfile.open(archive, "r:*") as bundle:
                _extract_tar(bundle, folder, label)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise InvalidModelURI(f"'{label}' is not a readable archive: {exc}") from None
    entries = list(folder.iterdir())
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return folder


def _extract_tar(bundle: tarfile.TarFile, folder: Path, label: str) -> None:
    if hasattr(tarfile, "data_filter"):  # Python 3.11.4+: refuses unsafe members itself
        try:
            bundle.extractall(folder, filter="data")
        except tarfile.FilterError as exc:
            raise InvalidModelURI(f"archive '{label}' has an unsafe member: {exc}") from None
        return
    members = bundle.getmembers()
    _check_names([m.name for m in members], folder, label)
    for member in members:
        if member.issym() or member.islnk():
            _check_names([str(Path(member.name).parent / member.linkname)], folder, label)
        elif not (member.isfile() or member.isdir()):
            raise InvalidModelURI(f"archive '{label}' has a special file: {member.name}")
    bundle.extractall(folder)


def _check_names(names: list[str], folder: Path, label: str) -> None:
    root = folder.resolve()
    for name in names:
        target = (root / name).resolve()
        if Path(name).is_absolute() or not target.is_relative_to(root):
            raise InvalidModelURI(f"archive '{label}' has a member outside its folder: {name}")
