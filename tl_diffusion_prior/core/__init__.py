"""Building blocks every stage shares: validation, serialisation, normalisation, moments,
torchrun helpers. Imports nothing from the other stages."""
