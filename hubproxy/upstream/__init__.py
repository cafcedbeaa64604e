"""Talking to the upstream hub."""
