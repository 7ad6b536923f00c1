"""Reading media files: the project's one audio loader lives in `audio.py`."""
