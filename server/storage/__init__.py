"""Persistence of skills and artifacts (files or Redis), scoped per tenant."""
