"""Sandbox providers: how a session's sandbox agent is started, reached and stopped."""
