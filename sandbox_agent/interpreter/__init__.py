"""The interpreter child: runs user code. Imports no gRPC (it runs sandboxed code
in the same process, and grpc's threads do not survive our fd juggling)."""
