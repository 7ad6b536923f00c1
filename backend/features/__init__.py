"""Per-frame speech features for the motion model: see `speech_features.py`."""
