"""The quality evaluation: synthetic scenes with exact depth, camera moves, scores (see run.py)."""
