"""`python -m happyhorse_core.generate`: kept as the stable entry point; the CLI lives in cli/generate.py."""
from .cli.generate import main

if __name__ == "__main__":
    raise SystemExit(main())
