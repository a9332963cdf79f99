#!/usr/bin/env bash
# Regenerates the protobuf/gRPC modules from inference.proto. The generated files are committed so
# that installing inferline needs no code generation; rerun this after editing the .proto.
set -euo pipefail
cd "$(dirname "$0")/../src"
python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. \
  inferline/protocol/proto/inference.proto
# Build our messages in a private descriptor pool: tritonclient and MLServer register the same
# `inference.*` names in the default pool, and a second registration there fails at import time.
# With a private pool, inferline, tritonclient.grpc and mlserver can share one process.
sed -i 's/_descriptor_pool\.Default()\.AddSerializedFile/_descriptor_pool.DescriptorPool().AddSerializedFile/' \
  inferline/protocol/proto/inference_pb2.py
