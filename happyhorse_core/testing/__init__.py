"""Tiny random-weight stand-ins (DiTs, T5Gemma folder, codecs, native VAEs) for tests, the demo and `--tiny`.

Nothing here is imported by the nodes or by the real-weight paths.
"""
