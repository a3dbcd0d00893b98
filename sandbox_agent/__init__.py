"""The sandbox agent: a grpc.aio server that owns one interpreter child process.

See docs/ARCHITECTURE.md ("The sandbox agent contract") for the CLI, the
credentials and the protocol between agent and interpreter.
"""
