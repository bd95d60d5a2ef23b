"""Dev-only tools (never deployed): the Azurite launcher and the end-to-end demo."""
