"""vd: one photo in, a 3D Gaussian-splatting scene out.

The library holds no command-line code; `vd.commands` is the Typer front end and `vd.cache`
the content-addressed artifact store. Heavy dependencies (torch, diffusers, gsplat, cv2,
rerun) are imported inside the functions that use them, so `import vd` stays cheap.
"""

__version__ = "0.1.0"
