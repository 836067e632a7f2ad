"""Phantoms."""
