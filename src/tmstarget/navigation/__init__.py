"""Neuronavigation exports: one writer per vendor and the import steps."""
