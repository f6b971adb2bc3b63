"""The target: regions, the seed map, the selection rule and its split-half reliability."""
