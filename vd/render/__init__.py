"""Rendering of Gaussians: one entry point, a CUDA (gsplat) and a CPU (torch) backend."""
