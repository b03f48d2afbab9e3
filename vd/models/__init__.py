"""Model backends: depth (moge, file) and inpainting (flux-fill, telea), loaded lazily."""
