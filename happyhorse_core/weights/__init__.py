"""Reading weights: memory-mapped safetensors, published layouts, variants, the DiT loader."""
