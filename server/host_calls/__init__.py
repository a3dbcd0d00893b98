"""Serves skills.* and artifacts.* calls made by sandboxed code."""
