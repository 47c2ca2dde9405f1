"""Sampling around the DiT: flow scheduler, split guidance, noise streams, latent spaces, the 256p pipeline and latent super-resolution."""
