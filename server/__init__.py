"""codemode control plane: the public gRPC API in front of per-session sandboxes."""
