"""Bad input to the scene readers: always a SceneError naming the file and the problem.

Where a library (scipy, h5py, spectral, numpy) fails, its exception must be chained as the
SceneError's ``__cause__``, not leak out as a traceback from deep inside the library.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import spectral.io.envi as envi

from edge_had.errors import SceneError
from edge_had.io import list_scenes, load_mask, load_scene, sha256_file


def scene_error(path: Path, match: str, **options: object) -> SceneError:
    """Load ``path``; assert a SceneError whose message names the file and matches ``match``."""
    with pytest.raises(SceneError, match=match) as info:
        load_scene(path, **options)
    assert path.name in str(info.value)
    return info.value


def cube(shape: tuple[int, ...] = (4, 3, 5)) -> np.ndarray:
    return np.random.default_rng(0).normal(size=shape).astype(np.float32)


def save_envi(header: Path, data: np.ndarray, **metadata: object) -> Path:
    envi.save_image(str(header), data, metadata=metadata, ext=".img")
    return header.with_suffix(".img")


def valid_mat(path: Path) -> Path:
    scipy.io.savemat(path, {"data": cube((20, 10, 8)), "map": np.eye(20, 10)})
    return path


def valid_h5(path: Path) -> Path:
    with h5py.File(path, "w") as handle:
        handle.create_dataset("cube", data=cube((20, 10, 8)))
    return path


# --------------------------------------------------------------------------------- file problems


def test_missing_file(tmp_path: Path) -> None:
    scene_error(tmp_path / "absent.mat", "not found")


def test_folder_instead_of_file(tmp_path: Path) -> None:
    (tmp_path / "dir.mat").mkdir()
    scene_error(tmp_path / "dir.mat", "not a file")


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "scene.txt"
    path.write_text("hello")
    scene_error(path, r"unknown file type \.txt")


@pytest.mark.parametrize("suffix", [".mat", ".h5", ".npy", ".hdr"])
def test_garbage_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(b"this is not a scene at all\n" * 20)
    error = scene_error(path, "cannot read")
    assert error.__cause__ is not None


@pytest.mark.parametrize("writer", [valid_mat, valid_h5])
def test_truncated_container(tmp_path: Path, writer) -> None:  # type: ignore[no-untyped-def]
    path = writer(tmp_path / f"cut{'.mat' if writer is valid_mat else '.h5'}")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    error = scene_error(path, "cannot read")
    assert error.__cause__ is not None


def test_truncated_npy(tmp_path: Path) -> None:
    path = tmp_path / "cut.npy"
    np.save(path, cube((20, 10, 8)))
    path.write_bytes(path.read_bytes()[:500])
    assert scene_error(path, "cannot read").__cause__ is not None


def test_truncated_envi_data(tmp_path: Path) -> None:
    data = save_envi(tmp_path / "cut.hdr", cube())
    data.write_bytes(data.read_bytes()[:100])
    scene_error(tmp_path / "cut.hdr", "truncated")


def test_envi_data_file_missing(tmp_path: Path) -> None:
    save_envi(tmp_path / "lonely.hdr", cube()).unlink()
    assert scene_error(tmp_path / "lonely.hdr", "no ENVI data file beside the header").__cause__ is not None


def test_envi_header_with_unparsable_wavelengths(tmp_path: Path) -> None:
    save_envi(tmp_path / "wl.hdr", cube(), wavelength=["a", "b", "c", "d", "e"])
    scene_error(tmp_path / "wl.hdr", "wavelength")


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (("data type = 4", "data type = 8"), r"unsupported ENVI 'data type' 8: expected one of 1, 2, 3, 4"),
        (("byte order = 0", "byte order = 2"), r"ENVI 'byte order' 2: expected 0 \(little-endian\) or 1"),
    ],
)
def test_envi_header_fields_spectral_misreads_are_refused_by_name(
    tmp_path: Path, edit: tuple[str, str], match: str
) -> None:
    """A review: data type 8 (a struct) failed as "KeyError: '8'", byte order 2 was read as
    big-endian while meta said little."""
    save_envi(tmp_path / "odd.hdr", cube())
    header = tmp_path / "odd.hdr"
    text = header.read_text()
    assert edit[0] in text
    header.write_text(text.replace(edit[0], edit[1], 1), encoding="utf-8")
    scene_error(header, match)


@pytest.mark.parametrize(
    ("saved", "said"),
    [
        (lambda text: text.encode("latin-1"), "text not in UTF-8 (read as Latin-1)"),
        (lambda text: b"\xef\xbb\xbf" + text.encode("utf-8"), "a UTF-8 byte-order mark"),
        (
            lambda text: b"\xef\xbb\xbf" + text.encode("latin-1"),
            "a UTF-8 byte-order mark and text not in UTF-8 (read as Latin-1)",
        ),
        (lambda text: text.encode("utf-16"), "UTF-16 text"),  # Windows' "Unicode"
    ],
)
def test_an_envi_header_in_latin1_or_with_a_byte_order_mark_is_read_and_said(
    tmp_path: Path, saved, said: str
) -> None:
    """spectral reads UTF-8 headers only: one written in Latin-1 (a "\u00b5m", an accented name, by
    Windows software) failed as "appears to be a binary file", one with a byte-order mark as
    "missing ENVI"; both were refused. They are read through a UTF-8 copy - given by the header or
    by the data file, the data file found beside the header - with a note; the same header in
    UTF-8 reads the same, without one."""
    data = cube()
    save_envi(tmp_path / "plain.hdr", data, wavelength=[0.4, 0.5, 0.6, 0.7, 0.8])
    text = (tmp_path / "plain.hdr").read_text()
    assert "wavelength units" not in text and "description" not in text
    text += "wavelength units = \u00b5m\ndescription = {Flug \u00fcber M\u00fcnchen}\n"
    (tmp_path / "plain.hdr").write_text(text, encoding="utf-8")
    save_envi(tmp_path / "odd.hdr", data)
    (tmp_path / "odd.hdr").write_bytes(saved(text))
    plain = load_scene(tmp_path / "plain.hdr")
    assert plain.meta["notes"] == []
    np.testing.assert_allclose(plain.wavelengths, [400, 500, 600, 700, 800])
    for path in (tmp_path / "odd.hdr", tmp_path / "odd.img"):
        scene = load_scene(path)
        np.testing.assert_array_equal(scene.cube, plain.cube)
        np.testing.assert_array_equal(scene.wavelengths, plain.wavelengths)
        assert scene.meta["notes"] == [
            f"the ENVI header {tmp_path / 'odd.hdr'} has {said}: read through a UTF-8 copy"
        ]


def test_a_header_copy_that_cannot_be_written_is_an_error_naming_the_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no writable temporary folder the error was a bare "[Errno 30] Read-only file system"."""
    import tempfile

    save_envi(tmp_path / "ro.hdr", cube())
    header = tmp_path / "ro.hdr"
    header.write_bytes(header.read_bytes() + "description = {\u00b5}\n".encode("latin-1"))

    def read_only(*args: object, **kwargs: object) -> str:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    scene_error(header, "read through a UTF-8 copy, which cannot be written to the temporary folder")


def test_a_binary_file_named_as_a_header_is_still_refused(tmp_path: Path) -> None:
    save_envi(tmp_path / "b.hdr", cube())
    (tmp_path / "b.hdr").write_bytes(bytes(range(256)) * 4)
    scene_error(tmp_path / "b.hdr", "binary file")


def test_a_transcoded_header_without_its_data_file_is_refused_by_name(tmp_path: Path) -> None:
    save_envi(tmp_path / "alone.hdr", cube()).unlink()
    header = tmp_path / "alone.hdr"
    header.write_bytes(header.read_bytes() + "description = {\u00b5}\n".encode("latin-1"))
    scene_error(header, "no ENVI data file beside the header")


def test_a_failing_memory_map_of_the_envi_check_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The layout check maps the data file again; under an address-space limit that map failed
    as a bare "[Errno 12] Cannot allocate memory" naming no file, and eval lost every scene."""
    from edge_had.io import envi as envi_reader

    save_envi(tmp_path / "big.hdr", cube((20, 10, 8)))

    def no_memory(*args: object, **kwargs: object) -> None:
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(envi_reader, "misread_note", no_memory)
    error = scene_error(tmp_path / "big.hdr", r"cannot read ENVI data file \(OSError: \[Errno 12\]")
    assert isinstance(error.__cause__, OSError)


def test_an_envi_maps_unlabelled_pixels_are_left_out_not_counted_as_anomalies(tmp_path: Path) -> None:
    """A map whose header's data ignore value marks pixels not labelled had them read as
    anomalies (gt != 0): 600 of them beside 19 real ones in a review's scene. Then they were
    refused; now they are unlabelled (Scene.labelled), with a note saying how many."""
    np.save(tmp_path / "scan.npy", cube((6, 5, 8)))
    labels = np.zeros((6, 5, 1), np.uint8)
    labels[2, 2] = 1
    labels[:, 0] = 255
    save_envi(tmp_path / "scan_gt.hdr", labels, **{"data ignore value": 255})
    scene = load_scene(tmp_path / "scan.npy")
    assert int(scene.gt.sum()) == 1 and (~scene.labelled).nonzero()[1].tolist() == [0] * 6
    assert "6 pixels of the ground-truth map scan_gt.hdr hold its 'data ignore value' 255: unlabelled" in (
        " ".join(scene.meta["notes"])
    )
    labels[:, 0] = 0  # labelled now; the header still names an ignore value
    for written in tmp_path.glob("scan_gt.*"):
        written.unlink()
    save_envi(tmp_path / "scan_gt.hdr", labels, **{"data ignore value": 255})
    scene = load_scene(tmp_path / "scan.npy")
    assert int(scene.gt.sum()) == 1 and scene.labelled is None and not scene.meta.get("notes")
    for written in tmp_path.glob("scan_gt.*"):  # 0 as the ignore value: ENVI masks' habit, or a slip
        written.unlink()
    save_envi(tmp_path / "scan_gt.hdr", labels, **{"data ignore value": 0})
    (note,) = load_scene(tmp_path / "scan.npy").meta["notes"]
    assert note.endswith("(0 is the background label: if it is meant here, remove the field)")


def test_a_matlab_struct_is_named_when_no_cube_is_found(tmp_path: Path) -> None:
    """A v7.3 file whose cube sits in a struct said "no variables (the file is empty)" (a review)."""
    path = tmp_path / "nested.mat"
    with h5py.File(path, "w", userblock_size=512) as handle:
        group = handle.create_group("S")
        group.attrs["MATLAB_class"] = np.bytes_("struct")
        group.create_dataset("data", data=cube((20, 10, 8)).T).attrs["MATLAB_class"] = np.bytes_("single")
    scene_error(
        path, r"no 3-D numeric array among variables S \(a struct or group: save its arrays as variables"
    )


# ------------------------------------------------------------------------------- content problems


def test_no_cube(tmp_path: Path) -> None:
    path = tmp_path / "flat.mat"
    scipy.io.savemat(path, {"image": np.ones((4, 3)), "labels": np.ones(5)})
    error = scene_error(path, "no cube found")
    assert "image" in str(error) and "labels" in str(error)


def test_several_cubes(tmp_path: Path) -> None:
    path = tmp_path / "two.mat"
    scipy.io.savemat(path, {"radiance": cube(), "reflectance": cube()})
    error = scene_error(path, "several candidate cube")
    assert "radiance" in str(error) and "reflectance" in str(error) and "cube_var" in str(error)


def test_several_ground_truths(tmp_path: Path) -> None:
    path = tmp_path / "twogt.h5"
    with h5py.File(path, "w") as handle:
        handle["cube"] = cube()
        handle["gt_a"] = np.zeros((4, 3))
        handle["gt_b"] = np.ones((4, 3))
    error = scene_error(path, "several candidate ground-truth")
    assert "gt_a" in str(error) and "gt_b" in str(error) and "gt_var" in str(error)


def test_named_variable_absent(tmp_path: Path) -> None:
    path = valid_mat(tmp_path / "named.mat")
    error = scene_error(path, "no variable 'cube'", cube_var="cube")
    assert "data" in str(error) and "map" in str(error)


def test_named_cube_not_3d(tmp_path: Path) -> None:
    scene_error(valid_mat(tmp_path / "named2d.mat"), "not a 3-D cube", cube_var="map")


def test_variable_names_refused_for_npy(tmp_path: Path) -> None:
    np.save(tmp_path / "plain.npy", cube())
    scene_error(tmp_path / "plain.npy", "cube_var applies to MATLAB/HDF5", cube_var="x")


def test_gt_shape_mismatch(tmp_path: Path) -> None:
    np.save(tmp_path / "c.npy", cube((4, 3, 5)))
    np.save(tmp_path / "gt.npy", np.ones((3, 4)))
    scene_error(tmp_path / "c.npy", r"ground-truth shape \(3, 4\)", gt_path=tmp_path / "gt.npy")


def test_gt_file_not_2d(tmp_path: Path) -> None:
    np.save(tmp_path / "gt3.npy", cube((4, 3, 2)))
    with pytest.raises(SceneError, match="expected a 2-D mask") as info:
        load_mask(tmp_path / "gt3.npy")
    assert "gt3.npy" in str(info.value)


def test_no_valid_pixel(tmp_path: Path) -> None:
    np.save(tmp_path / "nan.npy", np.full((4, 3, 5), np.nan, dtype=np.float32))
    scene_error(tmp_path / "nan.npy", "no valid pixel")


def test_no_valid_pixel_through_no_data(tmp_path: Path) -> None:
    save_envi(tmp_path / "nodata.hdr", np.zeros((4, 3, 5), dtype=np.int16), **{"data ignore value": 0})
    scene_error(tmp_path / "nodata.hdr", "no valid pixel")


def test_one_dead_band_is_named_when_it_leaves_no_valid_pixel(tmp_path: Path) -> None:
    """A band of no-data on every pixel invalidates every pixel; the error said only "no valid
    pixel", not which band to mark bad."""
    counts = np.random.default_rng(1).integers(100, 4000, (4, 3, 5)).astype(np.uint16)
    counts[:, :, 3] = 0
    save_envi(tmp_path / "dead.hdr", counts, **{"data ignore value": 0})
    scene_error(tmp_path / "dead.hdr", r"1 band\(s\) are NaN/Inf or no-data on every pixel \(0-based: 3\)")
    save_envi(tmp_path / "kept.hdr", counts, **{"data ignore value": 0, "bbl": [1, 1, 1, 0, 1]})
    assert load_scene(tmp_path / "kept.hdr").valid.all()  # what the message suggests works


def test_single_band(tmp_path: Path) -> None:
    np.save(tmp_path / "one.npy", cube((4, 3, 1)))
    scene_error(tmp_path / "one.npy", "1 band")


def test_npy_not_3d(tmp_path: Path) -> None:
    np.save(tmp_path / "flat.npy", cube((4, 3)))
    scene_error(tmp_path / "flat.npy", "3-D cube")


def test_bad_band_list_length(tmp_path: Path) -> None:
    save_envi(tmp_path / "bbl.hdr", cube(), bbl=[1, 0, 1])
    scene_error(tmp_path / "bbl.hdr", "bad-band list has 3 entries for 5 bands")


def test_pickled_object_array_refused(tmp_path: Path) -> None:
    objects = np.empty((2, 2, 2), dtype=object)
    objects[...] = {"payload": 1}
    np.save(tmp_path / "evil.npy", objects, allow_pickle=True)
    scene_error(tmp_path / "evil.npy", "pickles are refused")


def test_plain_pickle_refused(tmp_path: Path) -> None:
    (tmp_path / "evil2.npy").write_bytes(pickle.dumps(cube()))
    scene_error(tmp_path / "evil2.npy", "pickles are refused")


class _Payload:
    """Unpickling this would create a file: proof that nothing was unpickled if it is absent."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.target,))


def test_crafted_pickle_payload_never_runs(tmp_path: Path) -> None:
    target = tmp_path / "owned"
    objects = np.empty((1, 1, 1), dtype=object)
    objects[0, 0, 0] = _Payload(target)
    np.save(tmp_path / "payload.npy", objects, allow_pickle=True)
    (tmp_path / "payload2.npy").write_bytes(pickle.dumps(_Payload(target)))
    for name in ("payload.npy", "payload2.npy"):
        scene_error(tmp_path / name, "pickles are refused")
    assert not target.exists()


# ------------------------------------------------------------------------------ folders, checksum


def test_list_scenes_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(SceneError, match="does not exist") as info:
        list_scenes(tmp_path / "nowhere")
    assert "nowhere" in str(info.value)


def test_list_scenes_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("no scenes here")
    (tmp_path / "SHA256SUMS").write_text("")
    with pytest.raises(SceneError, match="no scene file"):
        list_scenes(tmp_path)


def test_sha256_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SceneError, match="not found") as info:
        sha256_file(tmp_path / "gone.bin")
    assert "gone.bin" in str(info.value)


@pytest.mark.parametrize(("field", "value"), [("header offset", "0.0"), ("lines", "4.0"), ("samples", "-3")])
def test_an_envi_size_field_that_is_no_whole_number_is_named(tmp_path: Path, field: str, value: str) -> None:
    """spectral's int() failed on these naming no field ("invalid literal for int() ...")."""
    save_envi(tmp_path / "n.hdr", cube())
    header = tmp_path / "n.hdr"
    text = header.read_text()
    line = next(line for line in text.splitlines() if line.startswith(field))
    header.write_text(text.replace(line, f"{field} = {value}"))
    scene_error(header, f"the ENVI header field '{field}' is '{value}': expected a whole number")


def test_a_trailing_comma_in_an_envi_list_is_taken_and_spectral_logs_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`{400, 500, ..., 800,}` was refused ("could not convert string to float: ''"), after a
    spectral WARNING line that the reader's own message contradicted."""
    save_envi(tmp_path / "c.hdr", cube(), wavelength=[400, 500, 600, 700, 800], bbl=[1, 1, 0, 1, 1])
    header = tmp_path / "c.hdr"
    text = header.read_text()
    written = text.replace("800 }", "800, }").replace("1 , 1 }", "1 , 1, }")
    header.write_text(written)
    assert "800, }" in written and "1, }" in written
    with caplog.at_level("WARNING"):
        scene = load_scene(header)
    np.testing.assert_array_equal(scene.wavelengths, [400, 500, 600, 700, 800])
    np.testing.assert_array_equal(scene.good_bands, [True, True, False, True, True])
    assert not [record for record in caplog.records if record.name.startswith("spectral")]
    header.write_text(text.replace("500 ,", ","))  # an empty value inside the list: refused
    scene_error(header, "wavelength")


def test_a_data_file_spectral_cannot_find_says_to_give_the_data_file(tmp_path: Path) -> None:
    """spectral's advice was to pass it "as the optional `image` argument to envi.open"."""
    data = save_envi(tmp_path / "x.hdr", cube())
    data.rename(tmp_path / "x.bil")  # interleave bsq: not among the names looked for
    scene_error(tmp_path / "x.hdr", "give the data file itself")
    assert load_scene(tmp_path / "x.bil").cube.shape == (4, 3, 5)


@pytest.mark.parametrize(("value", "noted"), [(-9999, True), (1024.5, True), (65535, False), (0, False)])
def test_a_no_data_value_an_integer_file_cannot_hold_is_said(
    tmp_path: Path, value: float, noted: bool
) -> None:
    """-9999 on uint16 data (a header copied from a float product) masked nothing, silently."""
    save_envi(tmp_path / "u.hdr", (cube() * 1000).astype(np.uint16), **{"data ignore value": value})
    notes = load_scene(tmp_path / "u.hdr").meta["notes"]
    said = [note for note in notes if "data ignore value" in note]
    assert bool(said) == noted, notes
    if noted:
        assert f"'data ignore value' {value:g} of " in said[0] and "is no uint16 value" in said[0]


def test_a_float64_files_no_data_value_is_matched_in_float64() -> None:
    """A float64 file was compared in float32: a valid 1234.5679 beside the no-data value
    1234.56789012345 was masked. Matched as stored now - and as a float32 writer stores the
    header's value (-3.40282347e+38, float32's lowest, is -3.4028234663852886e+38 in float64)."""
    from edge_had.io.scene import PixelRule

    lowest32 = float(np.finfo(np.float32).min)
    stored = np.full((5, 3), 0.5, dtype=np.float64)
    stored[0, 1] = 1234.56789012345  # the no-data value
    stored[1, 2] = 1234.5679  # a valid value next to it (equal in float32)
    stored[2, 0] = lowest32
    values = stored.astype(np.float32)
    assert values[0, 1] == values[1, 2]
    masked = ~PixelRule(no_data_value=1234.56789012345).valid(stored, values)
    np.testing.assert_array_equal(masked, [True, False, False, False, False])
    masked = ~PixelRule(no_data_value=-3.40282347e38).valid(stored, values)
    np.testing.assert_array_equal(masked, [False, False, True, False, False])
    assert -3.40282347e38 != lowest32


def test_a_ground_truth_maps_latin1_header_is_said_as_the_scenes_is(tmp_path: Path) -> None:
    """The map beside a scene (NAME_gt.hdr) read in Latin-1 said nothing (a review): its note
    joins the scene's notes, in detect/eval and in the stream report."""
    import json

    from edge_had.cli import main

    data = cube((6, 5, 8))
    save_envi(tmp_path / "s.hdr", data)
    gt = np.zeros((6, 5, 1), dtype=np.uint8)
    gt[2, 3] = 1
    save_envi(tmp_path / "s_gt.hdr", gt)
    map_header = tmp_path / "s_gt.hdr"
    map_header.write_bytes(
        map_header.read_bytes() + "description = {Zielpixel \u00fcberpr\u00fcft}\n".encode("latin-1")
    )
    said = f"the ENVI header {map_header} has text not in UTF-8 (read as Latin-1): read through a UTF-8 copy"
    scene = load_scene(tmp_path / "s.hdr")
    assert scene.gt is not None and scene.gt.sum() == 1 and said in scene.meta["notes"]
    report = tmp_path / "stream.json"
    assert (
        main(["stream", "--source", str(tmp_path / "s.hdr"), "--detector", "rx", "--json", str(report)]) == 0
    )
    assert said in json.loads(report.read_text())["notes"]
