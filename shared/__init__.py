"""The Bridgework engine: importable without any Functions host (no azure.functions imports here)."""
