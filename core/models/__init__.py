"""Model presets and loading (deferred heavy imports)."""
