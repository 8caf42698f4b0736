"""An exact closed triangle mesh of an N-level height map (pixelated columns on a base slab).

Faces: the top of each level's region (its outline from manifold3d's CrossSection, subdivided
at every pixel corner, triangulated by manifold3d.triangulate), vertical walls along every pixel
edge between different levels (and around the border, down to z = 0), and the bottom.
Every vertex lies on a pixel corner at a height that one of the (up to four) pixels around that
corner has, and every wall carries all of those heights on its vertical sides, so faces meet
edge to edge (no T-junctions). Coordinates: x = column, y = H - row (pixel units), z in level
steps; the caller scales them.
"""

from __future__ import annotations

import manifold3d
import numpy as np

from optics.fabrication.heightmap import runs

OUTSIDE = -1  # the key of the ground plane z = 0 around and under the solid


def _outline(mask: np.ndarray) -> list[np.ndarray]:
    """Contours (outer counter-clockwise, holes clockwise) of a boolean mask, integer (x, y) points."""
    height = mask.shape[0]
    rects = [
        np.array([(c0, height - r1), (c1, height - r1), (c1, height - r0), (c0, height - r0)], dtype=float)
        for r0, r1, c0, c1 in runs(mask)
    ]
    section = manifold3d.CrossSection(rects, manifold3d.FillRule.Positive)
    return [np.rint(np.asarray(c)).astype(np.int64) for c in section.to_polygons()]


def _subdivide(contour: np.ndarray) -> np.ndarray:
    """Insert every integer point along the axis-aligned edges of a closed contour."""
    points = []
    for a, b in zip(contour, np.roll(contour, -1, axis=0)):
        n = int(np.abs(b - a).max())
        steps = np.arange(n)[:, None]
        points.append(a + np.sign(b - a) * steps)
    return np.concatenate(points)


def height_field_mesh(levels: np.ndarray, base_steps: float) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (V x 3) and triangles (F x 3) of the closed solid of `levels` on a base of `base_steps`."""

    h, w = levels.shape
    padded = np.full((h + 2, w + 2), OUTSIDE, dtype=np.int64)
    padded[1:-1, 1:-1] = levels
    index: dict[tuple[int, int, int], int] = {}
    vertices: list[tuple[float, float, float]] = []

    def vertex(i: int, j: int, key: int) -> int:
        """Vertex at pixel corner (row-corner i, column-corner j) and height key."""
        found = index.get((i, j, key))
        if found is None:
            found = index[(i, j, key)] = len(vertices)
            vertices.append((float(j), float(h - i), 0.0 if key == OUTSIDE else base_steps + key))
        return found

    faces: list[tuple[int, int, int]] = []

    def surface(contours: list[np.ndarray], key: int, flip: bool) -> None:
        """Triangulate planar contours at height `key` (flip: face down)."""
        points = [_subdivide(c) for c in contours]
        flat = np.concatenate(points)
        ids = [vertex(int(h - y), int(x), key) for x, y in flat]
        for a, b, c in manifold3d.triangulate([p.astype(float) for p in points]):
            faces.append((ids[a], ids[c], ids[b]) if flip else (ids[a], ids[b], ids[c]))

    for key in np.unique(levels).tolist():
        surface(_outline(levels == key), key, flip=False)
    surface([np.array([(0, 0), (w, 0), (w, h), (0, h)])], OUTSIDE, flip=True)

    def side(i: int, j: int, low: int, high: int) -> list[int]:
        """Heights (keys) a wall's vertical side at corner (i, j) must carry, ascending."""
        around = set(padded[i : i + 2, j : j + 2].ravel().tolist())
        return sorted(k for k in around if low <= k <= high)

    def wall(p1: tuple[int, int], p2: tuple[int, int], a: int, b: int, flip: bool) -> None:
        """Vertical wall between corners p1 and p2 from the lower to the higher of keys a, b (zipped).

        Unflipped, its triangles face the side on the right of p1 -> p2 seen from above.
        """
        low, high = min(a, b), max(a, b)
        s1, s2 = side(*p1, low, high), side(*p2, low, high)
        i = j = 0
        while i < len(s1) - 1 or j < len(s2) - 1:
            if j == len(s2) - 1 or (i < len(s1) - 1 and s1[i + 1] <= s2[j + 1]):
                tri = (vertex(*p1, s1[i]), vertex(*p2, s2[j]), vertex(*p1, s1[i + 1]))
                i += 1
            else:
                tri = (vertex(*p1, s1[i]), vertex(*p2, s2[j]), vertex(*p2, s2[j + 1]))
                j += 1
            faces.append((tri[0], tri[2], tri[1]) if flip else tri)

    # Every face points out of the solid, so no reader (or trimesh's slow fix_normals) has to orient it:
    # a wall faces its lower side. Walls on x = c between pixels (r, c - 1) and (r, c) (padded
    # columns c and c + 1) face -x (the left pixel) unflipped.
    rows, cols = np.nonzero(padded[1:-1, :-1] != padded[1:-1, 1:])
    for r, c in zip(rows.tolist(), cols.tolist()):
        left, right = int(padded[r + 1, c]), int(padded[r + 1, c + 1])
        wall((r, c), (r + 1, c), left, right, flip=left > right)
    # Walls on y = H - r between pixels (r - 1, c) and (r, c) face -y (the lower pixel row r) unflipped.
    rows, cols = np.nonzero(padded[:-1, 1:-1] != padded[1:, 1:-1])
    for r, c in zip(rows.tolist(), cols.tolist()):
        above, below = int(padded[r, c + 1]), int(padded[r + 1, c + 1])
        wall((r, c), (r, c + 1), above, below, flip=below > above)
    return np.array(vertices), np.array(faces, dtype=np.int64)
