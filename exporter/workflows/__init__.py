"""Workflow health: status tracking, canary probe, recovery and integrity checks."""
