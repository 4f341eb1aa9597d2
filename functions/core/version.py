"""The code version: part of every fragment's key, so new code never reuses old results
whose making it would change."""

__version__ = "0.3.0"
