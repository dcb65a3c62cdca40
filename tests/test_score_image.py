"""``detect --envi``: the score map as an ENVI image on its scene's map."""

from __future__ import annotations

import numpy as np
import pytest
import spectral.io.envi as spectral_envi

from edge_had.cli import main
from edge_had.detectors import rx_reference
from edge_had.io.score_image import header_entries, write_score_image
from tests.test_io_readers import write_envi

MAP_INFO = (
    "{UTM, 1.000, 1.000, 712345.500, 4212345.500, 1.0000000000e+00, 1.0000000000e+00, 11, North, WGS-84, "
    "units=Meters}"
)
# a WKT string: its commas must survive (the spectral package splits braced values at commas),
# written over two lines as some writers do
WKT = (
    '{PROJCS["WGS_1984_UTM_Zone_11N",GEOGCS["GCS_WGS_1984",DATUM["D_WGS_1984",\n'
    'SPHEROID["WGS_1984",6378137.0,298.257223563]],UNIT["Degree",0.0174532925199433]]]}'
)


def georeferenced_envi_scene(tmp_path):
    rng = np.random.default_rng(4)
    cube = rng.normal(100.0, 5.0, (12, 9, 6)).astype(np.float32)
    cube[3, 4] += 40.0
    cube[7, 2, :] = -9999.0  # the no-data value: an invalid pixel
    header = tmp_path / "scene.hdr"
    write_envi(header, cube, "bil", **{"data ignore value": -9999, "x start": 101})
    text = header.read_text()
    header.write_text(text + f"map info = {MAP_INFO}\nCoordinate System String = {WKT}\n")
    return header, cube


# "Coordinate System String", capitalised as some software writes it: spectral warned on every read
@pytest.mark.filterwarnings("error::UserWarning")
def test_detect_envi_writes_the_scores_on_the_scene_map(tmp_path, capsys):
    header, cube = georeferenced_envi_scene(tmp_path)
    out = tmp_path / "out" / "scores.hdr"
    assert main(["detect", str(header), "--detector", "rx", "--envi", str(out)]) == 0
    assert "map information of" in capsys.readouterr().out

    image = spectral_envi.open(str(out), str(tmp_path / "out" / "scores.img"))
    scores = image.read_band(0)  # (load() would convert to float32)
    assert scores.shape == (12, 9) and np.dtype(image.dtype) == np.float64
    valid = np.ones((12, 9), dtype=bool)
    valid[7, 2] = False
    expected = rx_reference(cube, mask=valid)  # float64 numpy oracle on the valid pixels
    np.testing.assert_allclose(scores[valid], expected[valid], rtol=1e-10)
    assert np.isnan(scores[7, 2])
    assert np.unravel_index(np.nanargmax(scores), scores.shape) == (3, 4)

    written = out.read_text()
    assert f"map info = {MAP_INFO}\n" in written
    assert f"coordinate system string = {WKT}\n" in written  # verbatim, commas and line break kept
    assert "x start = 101\n" in written
    assert "wavelength" not in written and "data ignore value" not in written
    assert image.metadata["band names"] == ["rx score"]


def test_a_latin1_coordinate_system_string_is_copied_as_written(tmp_path, capsys):
    """A Latin-1 header reads (through a UTF-8 copy); its georeferencing was copied into
    scores.hdr - and named in the stream report's map - with replacement characters."""
    import json

    header, _ = georeferenced_envi_scene(tmp_path)
    french = WKT.replace("WGS_1984_UTM_Zone_11N", "R\u00e9seau_G\u00e9od\u00e9sique")
    header.write_bytes(header.read_text().replace(WKT, french).encode("latin-1"))
    out = tmp_path / "out" / "scores.hdr"
    assert main(["detect", str(header), "--detector", "rx", "--envi", str(out)]) == 0
    assert "Latin-1" in capsys.readouterr().err
    assert f"coordinate system string = {french}\n" in out.read_text(encoding="utf-8")
    report = tmp_path / "stream.json"
    assert main(["stream", "--source", str(header), "--detector", "rx", "--json", str(report)]) == 0
    assert json.loads(report.read_text())["map"]["coordinate_system"] == "R\u00e9seau_G\u00e9od\u00e9sique"


def test_detect_envi_from_a_file_without_a_map_says_so(tmp_path, capsys):
    cube = np.random.default_rng(1).normal(0.0, 1.0, (10, 8, 5))
    np.save(tmp_path / "cube.npy", cube)
    out = tmp_path / "scores.hdr"
    assert main(["detect", str(tmp_path / "cube.npy"), "--detector", "rx", "--envi", str(out)]) == 0
    assert "no map information: the scene is not an ENVI file" in capsys.readouterr().out
    scores = np.fromfile(tmp_path / "scores.img", dtype="<f8").reshape(10, 8)
    np.testing.assert_allclose(scores, rx_reference(cube.astype(np.float32)), rtol=1e-10)
    assert "map info" not in out.read_text()


def test_detect_envi_refuses_a_name_that_is_not_a_header_before_scoring(tmp_path, capsys):
    np.save(tmp_path / "cube.npy", np.zeros((4, 4, 3)))
    assert main(["detect", str(tmp_path / "cube.npy"), "--envi", str(tmp_path / "scores.img")]) == 2
    err = capsys.readouterr().err
    assert "--envi" in err and ".hdr" in err
    assert not (tmp_path / "scores.img").exists()


def test_header_entries_are_verbatim_in_any_case_and_absent_when_missing():
    text = "ENVI\nMap  Info = {a, b,\n c}\nx start=5\ndescription = {x = 1}\n"
    entries = header_entries(text, ("map info", "x start", "y start"))
    assert entries == {"map info": "{a, b,\n c}", "x start": "5"}


def test_write_score_image_refuses_a_cube_and_other_names(tmp_path):
    with pytest.raises(ValueError, match="2-D"):
        write_score_image(tmp_path / "s.hdr", np.zeros((2, 2, 2)), band_name="s", description="d")
    with pytest.raises(ValueError, match=".hdr"):
        write_score_image(tmp_path / "s.img", np.zeros((2, 2)), band_name="s", description="d")


def test_stream_out_puts_the_scores_of_an_envi_file_on_its_map_and_removes_stale_ones(tmp_path):
    header, cube = georeferenced_envi_scene(tmp_path)
    out = tmp_path / "run"
    assert main(["stream", "--source", str(header), "--detector", "rx", "--out", str(out)]) == 0
    streamed = np.load(out / "scores.npy")
    written = np.fromfile(out / "scores.img", dtype="<f8").reshape(streamed.shape)
    np.testing.assert_array_equal(written, streamed)  # NaN where not scored, as in scores.npy
    assert np.isfinite(written).sum() > 0.5 * written.size
    text = (out / "scores.hdr").read_text()
    assert f"map info = {MAP_INFO}\n" in text and "lines = 12\n" in text and "samples = 9\n" in text

    np.save(tmp_path / "other.npy", cube)  # a later run of a file without a map, into the same folder
    other = str(tmp_path / "other.npy")
    assert main(["stream", "--source", other, "--detector", "rx", "--out", str(out)]) == 0
    assert (out / "scores.npy").exists()
    assert not (out / "scores.hdr").exists() and not (out / "scores.img").exists()
