"""Finds model folders on disk, as MLServer's schemaless repository does.

Each root given to the server is either a model folder itself or a tree holding model folders; a
model folder has a `model-settings.json`, or just a model file we recognise (`model.joblib`, ...).
The tree is scanned again on every look-up, so a folder added while the server runs can be loaded
through the repository API.
"""

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from inferline.protocol.errors import BadRequest, InferlineError, ModelNotFound
from inferline.runtimes.registry import guess_implementation
from inferline.runtimes.settings import SETTINGS_FILE, ModelSettings, read_settings

log = logging.getLogger(__name__)


class ModelRepository:
    def __init__(self, roots: list[Path]):
        self.roots = [Path(r).resolve() for r in roots]

    def _folders(self) -> list[Path]:
        folders: list[Path] = []
        for root in self.roots:
            folders.extend(sorted(p.parent for p in root.glob(f"**/{SETTINGS_FILE}")))
            # Folders with a recognised model file but no settings: the root and its children.
            candidates = [root, *sorted(p for p in root.iterdir() if p.is_dir())]
            folders.extend(
                c
                for c in candidates
                if guess_implementation(c) and not (c / SETTINGS_FILE).exists()
            )
        return folders

    def scan(self) -> tuple[list[ModelSettings], list[tuple[Path, str]]]:
        """Every model found, and every folder whose settings cannot be read, with the reason."""
        found, broken = [], []
        for folder in self._folders():
            try:
                found.append(self._settings(folder))
            except InferlineError as exc:
                broken.append((folder, exc.message))
        return found, broken

    def find(self, name: str) -> ModelSettings:
        found, broken = self.scan()
        for settings in found:
            if settings.name == name:
                return settings
        for folder, reason in broken:
            if folder.name == name:
                raise BadRequest(reason)
        raise ModelNotFound(name)

    @staticmethod
    def _settings(folder: Path) -> ModelSettings:
        if (folder / SETTINGS_FILE).exists():
            return read_settings(folder)
        return ModelSettings(name=folder.name, folder=folder)


async def load_found_models(
    repository: ModelRepository,
    load_model: Callable[[ModelSettings], Awaitable[None]],
    mark_unavailable: Callable[[str, str | None, str], None],
) -> None:
    """Load every model the repository holds; a folder that cannot be read or a model that fails
    to load is logged and kept as unavailable, and the others still load."""
    found, broken = repository.scan()
    for folder, reason in broken:
        log.error("model folder %s cannot be read: %s", folder, reason)
        mark_unavailable(folder.name, None, reason)
    for settings in found:
        try:
            await load_model(settings)
        except InferlineError as exc:
            log.error("model %s failed to load: %s", settings.name, exc.message)
