"""What a PLY holds, named from its header: Gaussian splats, a triangle mesh, a point cloud, or
incomplete splats (some of the shape properties, and which are missing).

A Gaussian splat vertex carries an opacity, scales (``scale_0..2``, or two for 2DGS surfels), a
rotation (``rot_0..3``) and a colour (``f_dc_0..2``, or ``red green blue``). A file with faces is
a mesh whatever its vertices hold; a file with no scale and no rotation is a point cloud (an
opacity or normals alone do not give a point a shape).
"""

from __future__ import annotations

from dataclasses import dataclass

SPLAT = "gaussian splats"
MESH = "triangle mesh"
POINTS = "point cloud"
PARTIAL = "incomplete gaussian splats"

_GEOMETRY = ("opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")
_SHAPE = ("scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")


@dataclass
class PlyContent:
    kind: str  # SPLAT, MESH, POINTS or PARTIAL
    vertices: int
    faces: int
    missing: list  # splat properties the vertices lack

    @property
    def is_splats(self) -> bool:
        return self.kind == SPLAT

    def describe(self) -> str:
        """e.g. "a triangle mesh (8 vertices, 12 faces) whose vertices lack opacity, scale_0..2, rot_0..3",
        "a point cloud (50 points) lacking ...", "incomplete gaussian splats (50 vertices) lacking rot_0..3"."""
        if self.kind == MESH:
            what = f"a triangle mesh ({self.vertices:,} vertices, {self.faces:,} faces) whose vertices"
        elif self.kind == POINTS:
            what = f"a point cloud ({self.vertices:,} points) whose points"
        elif self.kind == PARTIAL:
            what = f"incomplete gaussian splats ({self.vertices:,} vertices) whose vertices"
        else:
            what = f"gaussian splats ({self.vertices:,})"
        return what + (f" lack {', '.join(_compact(self.missing))}" if self.missing else "")


def missing_splat_properties(names) -> list[str]:
    """The splat properties absent from a vertex property list (2DGS's two scales count as scales)."""
    have = set(names)
    missing = [p for p in _GEOMETRY if p not in have]
    if "scale_2" in missing and {"scale_0", "scale_1"} <= have:
        missing.remove("scale_2")
    if not {"f_dc_0", "f_dc_1", "f_dc_2"} <= have and not {"red", "green", "blue"} <= have:
        missing += ["f_dc_0", "f_dc_1", "f_dc_2"]
    return missing


def ply_content(names, elements: dict) -> PlyContent:
    """Classify a PLY from its vertex property names and {element name: count}."""
    faces = int(elements.get("face", 0))
    missing = missing_splat_properties(names)
    geometry_missing = [p for p in missing if p in _GEOMETRY]
    if faces:
        kind = MESH
    elif not missing:
        kind = SPLAT
    elif all(p in geometry_missing for p in _SHAPE if p != "scale_2"):
        kind = POINTS
    else:
        kind = PARTIAL
    return PlyContent(kind, int(elements.get("vertex", 0)), faces, missing)


def _compact(names: list[str]) -> list[str]:
    """["scale_0", "scale_1", "scale_2"] -> ["scale_0..2"] (runs of numbered properties folded)."""
    out: list[str] = []
    i = 0
    while i < len(names):
        stem, _, num = names[i].rpartition("_")
        j = i
        while num.isdigit() and j + 1 < len(names) and names[j + 1] == f"{stem}_{int(num) + j + 1 - i}":
            j += 1
        out.append(f"{stem}_{num}..{int(num) + j - i}" if j > i else names[i])
        i = j + 1
    return out


__all__ = ["MESH", "PARTIAL", "POINTS", "SPLAT", "PlyContent", "missing_splat_properties", "ply_content"]
