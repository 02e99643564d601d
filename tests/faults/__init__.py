"""Fault injection: real outages, slow networks, exhausted pools and restarts under load."""
