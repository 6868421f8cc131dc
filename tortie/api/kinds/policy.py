"""Placeholder: filled in by the kind authors."""
