"""gRPC servicers of the public API; each module registers one service."""
