"""Map coordinates of an ENVI file's pixels, from its header's ``map info``.

ENVI's ``map info = {projection, reference x, reference y, easting, northing, x pixel size,
y pixel size[, zone, North|South], datum[, units=...][, rotation=...]}`` ties the *reference
pixel* - in 1-based file coordinates, (1, 1) being the upper-left **corner** of the upper-left
pixel, so (1.5, 1.5) is that pixel's centre - to the map position (easting, northing), or
(longitude, latitude) for ``Geographic Lat/Lon``. The centre of the pixel at 0-based line ``r``,
sample ``c`` lies ``a = (c + 0.5) - (ref_x - 1)`` pixels right of and ``b = (r + 0.5) - (ref_y -
1)`` pixels below the reference, so on a north-up grid::

    x = easting + a * dx        y = northing - b * dy

``rotation=θ`` (degrees) turns the pixel grid counterclockwise by θ about the reference pixel
(GDAL's reading since 2.2, which matches flight lines drawn on their map)::

    x = easting + cos θ * a * dx + sin θ * b * dy
    y = northing + sin θ * a * dx - cos θ * b * dy

(GDAL's geotransform agrees with this at reference pixel (1, 1) and square pixels; elsewhere it
leaves the rotation out of the origin.) The transform is linear in the map's own units - metres,
or degrees for a geographic map, as ENVI itself treats it; no datum or projection is applied.
The header's entries are found by :func:`edge_had.io.score_image.header_entries`, which the score
image copies verbatim.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_had.errors import SceneError

DEFAULT_UNITS = {"utm": "Meters", "geographic lat/lon": "Degrees"}  # when ``units=`` is not given


@dataclass(frozen=True)
class MapInfo:
    """A parsed ``map info`` (see the module's docstring for the conventions)."""

    projection: str
    reference_pixel: tuple[float, float]  # (x: sample, y: line), 1-based, (1, 1) the UL pixel's UL corner
    reference_map: tuple[float, float]  # (easting or longitude, northing or latitude)
    pixel_size: tuple[float, float]  # (dx, dy) in map units; dy > 0 for a north-up grid
    rotation_deg: float = 0.0  # counterclockwise, about the reference pixel
    units: str | None = None
    zone: str | None = None  # UTM only
    hemisphere: str | None = None  # UTM only
    datum: str | None = None
    coordinate_system: str | None = None  # the name in the header's coordinate system string
    text: str = ""  # the map info as the header has it

    def to_map(self, line: Any, sample: Any) -> tuple[Any, Any]:
        """Map (x, y) of a position in 0-based image coordinates: (0, 0) is the upper-left corner
        of the upper-left pixel, (r + 0.5, c + 0.5) the centre of the pixel at line r, sample c.
        Scalars or arrays."""
        ref_x, ref_y = self.reference_pixel
        a = np.asarray(sample, dtype=np.float64) - (ref_x - 1.0)
        b = np.asarray(line, dtype=np.float64) - (ref_y - 1.0)
        dx, dy = self.pixel_size
        theta = math.radians(self.rotation_deg)
        cos, sin = math.cos(theta), math.sin(theta)  # (exactly 1 and 0 at no rotation)
        east, north = self.reference_map
        x = east + cos * a * dx + sin * b * dy
        y = north + sin * a * dx - cos * b * dy
        return x, y

    def pixel_centre(self, row: Any, col: Any) -> tuple[Any, Any]:
        """Map (x, y) of the centre of the pixel at 0-based ``row`` (line), ``col`` (sample)."""
        return self.to_map(np.asarray(row, dtype=np.float64) + 0.5, np.asarray(col, dtype=np.float64) + 0.5)

    def describe(self) -> dict[str, Any]:
        """For a report: what the map is and how its coordinates are read."""
        return {
            "map_info": self.text,
            "projection": self.projection,
            "coordinate_system": self.coordinate_system,
            "zone": self.zone,
            "hemisphere": self.hemisphere,
            "datum": self.datum,
            "units": self.units,
            "rotation_deg": self.rotation_deg,
            "x": "longitude" if self.projection.lower().startswith("geographic") else "easting",
            "y": "latitude" if self.projection.lower().startswith("geographic") else "northing",
            "convention": "ENVI: reference pixel (1, 1) is the upper-left corner of the upper-left "
            "pixel; map_x/map_y are the position of the centroid's pixel centre, map_box the outer "
            "corners of the event's box; rotation counterclockwise about the reference pixel",
        }


def parse_map_info(text: str, coordinate_system_string: str | None = None) -> MapInfo:
    """The ``map info`` value (with or without its braces); ValueError when it is not one."""
    fields = [field.strip() for field in text.strip().strip("{}").split(",")]
    if len(fields) < 7:
        raise ValueError(f"map info has {len(fields)} fields, needs at least 7 (projection, reference "
                         "pixel x and y, easting, northing, pixel size x and y)")  # fmt: skip
    try:
        ref_x, ref_y, east, north, dx, dy = (float(value) for value in fields[1:7])
    except ValueError:
        raise ValueError(f"map info fields 2 to 7 must be numbers, got {fields[1:7]}") from None
    numbers = (ref_x, ref_y, east, north, dx, dy)
    if not all(math.isfinite(value) for value in numbers) or dx == 0 or dy == 0:
        raise ValueError(f"map info needs finite numbers and non-zero pixel sizes, got {fields[1:7]}")
    named = {}
    plain = []
    for field in fields[7:]:
        key, equals, value = field.partition("=")
        if equals:
            named[key.strip().lower()] = value.strip()
        elif field:
            plain.append(field)
    projection = fields[0]
    zone = hemisphere = None
    if projection.lower() == "utm" and len(plain) >= 2:
        zone, hemisphere, plain = plain[0], plain[1], plain[2:]
    rotation = 0.0
    if "rotation" in named:
        try:
            rotation = float(named["rotation"])
        except ValueError:
            raise ValueError(
                f"map info rotation must be a number of degrees, got {named['rotation']!r}"
            ) from None
        if not math.isfinite(rotation):
            raise ValueError(f"map info rotation must be finite, got {named['rotation']!r}")
    return MapInfo(
        projection=projection,
        reference_pixel=(ref_x, ref_y),
        reference_map=(east, north),
        pixel_size=(dx, dy),
        rotation_deg=rotation,
        units=named.get("units", DEFAULT_UNITS.get(projection.lower())),
        zone=zone,
        hemisphere=hemisphere,
        datum=plain[0] if plain else None,
        coordinate_system=_coordinate_system_name(coordinate_system_string),
        text=text.strip(),
    )


def map_info_of(header: str | Path) -> MapInfo | None:
    """The map of an ENVI header file (None when it has no ``map info``); a map info that cannot
    be read is a :class:`~edge_had.errors.SceneError` naming the header."""
    from edge_had.io.score_image import georeference_of

    entries = georeference_of(header)
    if "map info" not in entries:
        return None
    try:
        return parse_map_info(entries["map info"], entries.get("coordinate system string"))
    except ValueError as error:
        raise SceneError(f"cannot read its map info ({error})", header) from None


def _coordinate_system_name(wkt: str | None) -> str | None:
    """The name a WKT coordinate system string gives first (``PROJCS["name", ...``)."""
    if not wkt:
        return None
    match = re.search(r'^\s*\{?\s*[A-Za-z_]+\s*\[\s*"([^"]*)"', wkt)
    return match.group(1) if match else None
