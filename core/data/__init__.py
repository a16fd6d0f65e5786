"""Training and evaluation data: the prompt template, loaders, presets and the synthetic generator."""
