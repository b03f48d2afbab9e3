"""Export formats (PLY, compressed PLY, .splat, COLMAP dataset, video)."""
