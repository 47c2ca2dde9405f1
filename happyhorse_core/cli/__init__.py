"""Command line: `python -m happyhorse_core.generate` (generate.py), its clip runner, component builders and text progress bar."""
