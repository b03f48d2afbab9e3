"""Model weights: the registry of known files and their verified, resumable download."""
