"""Shared plumbing for every Obscura entry point: user-facing errors, configuration, atomic files."""
