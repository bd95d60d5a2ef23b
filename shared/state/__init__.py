"""Bridgework's own state in Table and Blob Storage: migrations, progress, journal, reports."""
