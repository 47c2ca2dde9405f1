"""HappyHorse core: the daVinci-MagiHuman joint video+audio model in pure PyTorch.

Nothing in this package imports ComfyUI (`comfy`, `folder_paths`, `server`, `comfy_api`);
hosts pass progress, interrupt and VAE hooks in as plain callables.
"""
__version__ = "0.1.0"
