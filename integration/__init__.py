"""Checks against real outside programs, run by `make test-integration` (integration/run)."""
