"""Thin trigger adapters, one blueprint per area: parse the input, call `shared/`, return."""
