"""The device vocabulary: device types, payload models, topics and the estate model.

This package depends on nothing else in the repository; every service speaks through it.
"""
