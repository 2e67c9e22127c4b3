"""Payload models, one module per device type; ``devices.catalog`` ties them together."""
