"""The dataflow engine: each pipeline version runs as stages that move tensors between topics."""
