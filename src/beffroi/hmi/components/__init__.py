"""Pieces of pages that are bigger than a function."""
