"""The Python client's conformance runner (driven by tests/conformance)."""
