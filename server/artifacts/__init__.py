"""Artifacts: named, typed data that outlives sessions."""
