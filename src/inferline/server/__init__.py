"""The model server: a transport-agnostic data plane with REST and gRPC adapters."""
