"""One-off command-line tools: fp8 conversion, Turbo-VAED .ckpt conversion, Stable Audio VAE extraction, golden parity."""
