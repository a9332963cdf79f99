"""Strict readers for one mapping of a manifest.

SC2's CLI decodes manifests with Go's strict JSON decoder, so a typo such as `storagUri` is an
error rather than a silently ignored key. `Fields` gives the same strictness to the plain dicts
PyYAML produces: it rejects keys it was not told about, checks each value's type, and puts the
full path of the offending field (`spec.steps[1].inputs[0]`) in every message.
"""

from collections.abc import Callable, Iterator
from datetime import date
from typing import Any, TypeVar

from inferline.resources.errors import ResourceError

T = TypeVar("T")


def describe(value: Any) -> str:
    """Say what a wrong value is, in YAML terms rather than Python ones."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value}"
    if isinstance(value, str):
        return f"string '{value}'"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, date):
        # YAML turns unquoted 2024-01-01 into a date; quoting it keeps it a string.
        return f"date {value.isoformat()} (quote it to make it a string)"
    return type(value).__name__


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def wrong_type(path: str, expected: str, value: Any) -> ResourceError:
    return ResourceError(f"field '{path}' must be {expected}, got {describe(value)}")


def require_mapping(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise wrong_type(path, "a mapping", value)
    for key in value:
        if not isinstance(key, str):
            # YAML 1.1 reads an unquoted `on:` or `1:` key as a boolean or a number.
            raise ResourceError(f"field names must be strings: {describe(key)} in '{path}'")
    return value


class Fields:
    """One mapping of a manifest, read field by field.

    Absent and null values read as "not set" (Go decodes a null into the zero value, and a
    manifest author writes `key:` with nothing after it to mean the same).
    """

    __slots__ = ("doc", "path")

    def __init__(self, value: Any, path: str, allowed: frozenset[str] | set[str]):
        self.doc = require_mapping(value, path)
        self.path = path
        for key in self.doc:
            if key not in allowed:
                raise ResourceError(f"unknown field '{join(path, key)}'")

    def at(self, key: str) -> str:
        return join(self.path, key)

    def get(self, key: str) -> Any:
        return self.doc.get(key)

    def string(self, key: str, *, required: bool = False) -> str | None:
        value = self.doc.get(key)
        if value is None:
            if required:
                raise ResourceError(f"missing required field '{self.at(key)}'")
            return None
        if not isinstance(value, str):
            raise wrong_type(self.at(key), "a string", value)
        return value

    def integer(self, key: str) -> int | None:
        value = self.doc.get(key)
        if value is None:
            return None
        # bool is an int subclass in Python; `replicas: true` is still a mistake.
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong_type(self.at(key), "an integer", value)
        return value

    def boolean(self, key: str) -> bool:
        value = self.doc.get(key)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise wrong_type(self.at(key), "true or false", value)
        return value

    def strings(self, key: str) -> list[str]:
        value = self.doc.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise wrong_type(self.at(key), "a list of strings", value)
        items = []
        for index, item in enumerate(value):
            # A bare `-` is a null item; Go decodes it as "", and the validation rules then
            # report it in their own words ("step second has an empty input").
            if item is None:
                item = ""
            if not isinstance(item, str):
                raise wrong_type(f"{self.at(key)}[{index}]", "a string", item)
            items.append(item)
        return items

    def string_map(self, key: str) -> dict[str, str]:
        value = self.doc.get(key)
        if value is None:
            return {}
        mapping = require_mapping(value, self.at(key))
        for name, item in mapping.items():
            if not isinstance(item, str):
                raise wrong_type(f"{self.at(key)}['{name}']", "a string", item)
        return dict(mapping)

    def mapping(self, key: str) -> dict[str, Any] | None:
        """A passthrough block (a Kubernetes pod spec, say) kept as written, unchecked."""
        value = self.doc.get(key)
        if value is None:
            return None
        return dict(require_mapping(value, self.at(key)))

    def child(self, key: str, allowed: frozenset[str] | set[str]) -> "Fields | None":
        value = self.doc.get(key)
        if value is None:
            return None
        return Fields(value, self.at(key), allowed)

    def items(self, key: str) -> Iterator[tuple[Any, str]]:
        """The elements of a list field, each with its own path."""
        value = self.doc.get(key)
        if value is None:
            return
        if not isinstance(value, list):
            raise wrong_type(self.at(key), "a list", value)
        for index, item in enumerate(value):
            yield item, f"{self.at(key)}[{index}]"

    def parsed(self, key: str, parse: Callable[[Any], T]) -> T | None:
        """A value with its own syntax (a quantity); the parser's complaint gets the path."""
        value = self.doc.get(key)
        if value is None:
            return None
        try:
            return parse(value)
        except ResourceError as exc:
            raise ResourceError(f"field '{self.at(key)}': {exc.message}") from None
