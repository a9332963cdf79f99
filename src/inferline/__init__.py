"""inferline: Open Inference Protocol (V2) serving and data-flow inference pipelines."""

__version__ = "0.1.0"
