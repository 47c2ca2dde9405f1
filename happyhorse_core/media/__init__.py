"""Media at the host boundary: reading images/audio (read.py), voice-track preparation (audio.py), mp4 muxing (mux.py)."""
