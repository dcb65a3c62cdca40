"""Events on the map: from an ENVI file with ``map info``, each event of ``events.jsonl`` has the map
position of its centroid's pixel centre and its box's corners, against coordinates computed by
hand from the header (ENVI: reference pixel (1, 1) is the upper-left corner of the upper-left
pixel; ``rotation`` counterclockwise about the reference pixel); without a map, no map fields."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from edge_had.cli import main
from edge_had.errors import SceneError
from edge_had.io.map_info import map_info_of, parse_map_info
from tests.test_io_readers import write_envi

WKT = '{PROJCS["WGS_1984_UTM_Zone_33N",GEOGCS["GCS_WGS_1984",DATUM["D_WGS_1984"]],UNIT["Meter",1.0]]}'
TARGET = (slice(20, 22), slice(6, 8))  # lines 20-21, samples 6-7: centroid (20.5, 6.5)


def scene_with_map(tmp_path: Path, map_info: str | None, name: str = "scene") -> Path:
    """A 40 x 16 x 8 BIL file, one bright 2 x 2 target at ``TARGET``, the header's ``map_info``."""
    rng = np.random.default_rng(11)
    cube = rng.normal(100.0, 2.0, (40, 16, 8)).astype(np.float32)
    cube[TARGET] += np.linspace(40.0, -40.0, 8, dtype=np.float32)  # a different spectrum
    header = tmp_path / f"{name}.hdr"
    write_envi(header, cube, "bil")
    if map_info is not None:
        header.write_text(header.read_text() + f"map info = {map_info}\ncoordinate system string = {WKT}\n")
    return header


def stream_events(tmp_path: Path, header: Path) -> tuple[list[dict], dict]:
    out, report = tmp_path / f"run-{header.stem}", tmp_path / f"{header.stem}.json"
    argv = ["stream", "--source", str(header), "--detector", "rx", "--out", str(out), "--json", str(report)]
    assert main(argv) == 0
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    return events, json.loads(report.read_text())


def target_event(events: list[dict]) -> dict:
    hits = [
        e
        for e in events
        if e["first_line"] <= 20 <= e["last_line"] and e["first_pixel"] <= 6 <= e["last_pixel"]
    ]
    assert len(hits) == 1, events
    event = hits[0]
    assert (event["first_line"], event["last_line"], event["first_pixel"], event["last_pixel"]) == (
        20,
        21,
        6,
        7,
    )
    assert (event["centroid_line"], event["centroid_pixel"]) == (20.5, 6.5)
    return event


def test_events_of_a_north_up_file_are_placed_from_a_reference_pixel_that_is_not_the_first(tmp_path):
    """Reference pixel (4, 3) - file coordinates, (1, 1) the first pixel's upper-left corner - at
    (1000, 2000), pixels 2 m wide and 3 m tall. Centroid (line 20.5, sample 6.5): its pixel centre
    is at file (x 8.0, y 22.0), 4 pixels right of and 19 below the reference: x = 1000 + 4 * 2 =
    1008, y = 2000 - 19 * 3 = 1943. Box: samples 6-7 span file x 7..9 (1006 .. 1010), lines 20-21
    file y 21..23 (1946 .. 1940)."""
    header = scene_with_map(
        tmp_path, "{UTM, 4.0, 3.0, 1000.0, 2000.0, 2.0, 3.0, 33, North, WGS-84, units=Meters}"
    )
    events, report = stream_events(tmp_path, header)
    event = target_event(events)
    assert (event["map_x"], event["map_y"]) == (1008.0, 1943.0)
    assert event["map_box"] == [[1006.0, 1946.0], [1010.0, 1946.0], [1010.0, 1940.0], [1006.0, 1940.0]]
    placed = report["map"]
    assert placed["coordinate_system"] == "WGS_1984_UTM_Zone_33N" and placed["units"] == "Meters"
    assert placed["projection"] == "UTM" and (placed["zone"], placed["hemisphere"]) == ("33", "North")
    assert (placed["x"], placed["y"], placed["rotation_deg"]) == ("easting", "northing", 0.0)


def test_events_of_a_rotated_file_turn_about_the_reference_pixel(tmp_path):
    """rotation=90: the grid turned counterclockwise by 90 degrees about the reference pixel (1, 1)
    at (500, 800), 1 m pixels: samples run north, lines run east. The centroid's pixel centre is
    7 pixels right of and 21 below the reference: x = 500 + 21 = 521, y = 800 + 7 = 807."""
    header = scene_with_map(
        tmp_path, "{UTM, 1.0, 1.0, 500.0, 800.0, 1.0, 1.0, 33, North, WGS-84, rotation=90.0}"
    )
    events, report = stream_events(tmp_path, header)
    event = target_event(events)
    np.testing.assert_allclose([event["map_x"], event["map_y"]], [521.0, 807.0], rtol=0, atol=1e-9)
    corners = [[520.0, 806.0], [520.0, 808.0], [522.0, 808.0], [522.0, 806.0]]
    np.testing.assert_allclose(event["map_box"], corners, rtol=0, atol=1e-9)
    assert report["map"]["rotation_deg"] == 90.0


def test_a_file_without_a_map_gives_events_without_map_fields(tmp_path):
    events, report = stream_events(tmp_path, scene_with_map(tmp_path, None))
    event = target_event(events)
    assert not any(key.startswith("map_") for key in event)  # absent, not zeros
    assert report["map"] is None


def test_map_info_at_30_degrees_and_in_degrees_of_longitude_and_latitude():
    rotated = parse_map_info("{UTM, 1, 1, 0.0, 0.0, 2.0, 2.0, 33, North, WGS-84, rotation=30}")
    # the upper-left pixel's centre: 1 m right and 1 m down on the unrotated grid, i.e. (1, -1)
    # turned 30 degrees counterclockwise
    c, s = math.sqrt(3) / 2, 0.5
    np.testing.assert_allclose(rotated.pixel_centre(0, 0), (c + s, s - c), rtol=0, atol=1e-12)
    geographic = parse_map_info("{Geographic Lat/Lon, 1.5, 1.5, 15.25, 48.75, 0.01, 0.02, WGS-84}")
    assert geographic.pixel_centre(0, 0) == (15.25, 48.75)  # reference (1.5, 1.5): that centre
    np.testing.assert_allclose(geographic.pixel_centre(2, 3), (15.28, 48.71), rtol=0, atol=1e-12)
    assert (geographic.units, geographic.datum, geographic.describe()["x"]) == (
        "Degrees",
        "WGS-84",
        "longitude",
    )


def test_utm_zone_hemisphere_and_datum_are_read_in_the_documented_order():
    # {projection, x, y, easting, northing, dx, dy[, zone, North|South], datum[, ...]}
    bare = parse_map_info("{UTM, 1, 1, 500000.0, 4000000.0, 30.0, 30.0, 13, North}")
    assert (bare.zone, bare.hemisphere, bare.datum, bare.units) == ("13", "North", None, "Meters")
    full = parse_map_info("{UTM, 1, 1, 500000.0, 4000000.0, 30.0, 30.0, 13, South, WGS-84, extra}")
    assert (full.zone, full.hemisphere, full.datum) == ("13", "South", "WGS-84")


@pytest.mark.parametrize(
    ("map_info", "problem"),
    [
        ("{UTM, 1, 1, 500.0, 800.0}", "needs at least 7"),
        ("{UTM, 1, 1, 500.0, 800.0, 1.0}", "needs at least 7"),
        ("{UTM, 1, 1, 500.0, 800.0, 1.0, 0.0, 33, North}", "non-zero pixel sizes"),
        ("{UTM, 1, 1, 500.0, north, 1.0, 1.0, 33, North}", "must be numbers"),
        ("{UTM, 1, 1, 500.0, 800.0, 0.0, 1.0, 33, North}", "non-zero pixel sizes"),
        ("{UTM, 1, 1, 500.0, 800.0, 1.0, 1.0, 33, North, rotation=east}", "rotation must be a number"),
    ],
)
def test_a_map_info_that_cannot_be_read_is_an_error_and_a_stream_scores_on_without_map(
    tmp_path, map_info, problem
):
    header = scene_with_map(tmp_path, map_info)
    with pytest.raises(SceneError, match=problem) as caught:
        map_info_of(header)
    assert caught.value.path == header
    # a header glitch must not stop a flight's stream: it is said, and events go unplaced
    events, report = stream_events(tmp_path, header)
    assert report["map"] is None and any(
        problem in note and "no map coordinates" in note for note in report["notes"]
    )
    assert target_event(events) and all("map_x" not in event for event in events)
