"""`inferline bench`: a load generator for V2 models and pipelines (closed and open loop)."""
