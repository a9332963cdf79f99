"""Gateways between the bus and the V2 data plane: the model gateway runs a model over its
topics; the pipeline gateway turns a synchronous call into messages and back."""
