"""Model runtimes: the code that loads a model and answers predict calls."""

from inferline.runtimes.base import Runtime
from inferline.runtimes.settings import ModelSettings

__all__ = ["ModelSettings", "Runtime"]
