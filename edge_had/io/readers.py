"""Load a scene file of any supported format into a validated :class:`~edge_had.io.scene.Scene`.

Public entry points: :func:`load_scene`, :func:`load_mask`, :func:`list_scenes`, :func:`sha256_file`,
:func:`scene_sha256`, :func:`ground_truth_beside`, and :func:`read_raw` (a file's arrays before
validation, for streaming).
The format follows the file name:

* ``.mat``: MATLAB v5 or v7.3 (:mod:`edge_had.io.containers`);
* ``.h5`` / ``.hdf5``: plain HDF5 stored as (rows, cols, bands) (:mod:`edge_had.io.containers`);
* ``.hdr``, or an ENVI data file with a header beside it: ENVI (:mod:`edge_had.io.envi`);
* ``.npy``: one 3-D array, read without pickle (object arrays are refused).

A scene's ground truth (anomaly map) is the one :func:`load_scene` is given, else the one stored
in a ``.mat``/``.h5`` file, else a map beside the file named after it, ``NAME_gt.npy`` or
``NAME_gt.hdr`` (single-band ENVI) for ``NAME.hdr``/``NAME.npy``/...: the way to give an ENVI or
``.npy`` scene its map for ``eval``, ``train`` and ``stream`` (:func:`ground_truth_beside`).

Every problem is a :class:`~edge_had.errors.SceneError` naming the file; invalid pixels (NaN,
Inf, no-data) are masked through ``Scene.valid`` by :func:`~edge_had.io.scene.make_scene`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from edge_had.errors import SceneError
from edge_had.io.containers import read_container_mask, read_container_scene
from edge_had.io.envi import envi_files, header_beside, read_envi
from edge_had.io.plausibility import layout_note
from edge_had.io.raw import LAYOUTS, RawScene, reading, to_rows_cols_bands
from edge_had.io.scene import Scene, ground_truth_mask, make_scene, nan_labels_note

SCENE_SUFFIXES = (".mat", ".hdr", ".npy", ".h5", ".hdf5")
#: A scene ``NAME.*``'s ground truth beside it: ``NAME`` + this + one of GROUND_TRUTH_SUFFIXES
#: (any case, the name's too: ``scan_GT.NPY``).
GROUND_TRUTH_NAME = "_gt"
GROUND_TRUTH_SUFFIXES = (".npy", ".hdr")
#: Data-file suffixes an ENVI header's own name may carry (``scan.img.hdr``): its scene is ``scan``.
ENVI_DATA_SUFFIXES = (".img", ".dat", ".raw", ".bsq", ".bil", ".bip")
CONTAINER_SUFFIXES = (".mat", ".h5", ".hdf5")
_PICKLE_OPCODE = b"\x80"  # first byte of a pickle stream (protocol 2 and later)
_CHUNK_BYTES = 1 << 20


def load_scene(
    path: str | Path,
    *,
    cube_var: str | None = None,
    gt_var: str | None = None,
    gt_path: str | Path | None = None,
    name: str | None = None,
    interleave: str | None = None,
    saturation: float | None = None,
) -> Scene:
    """Read and validate one scene.

    ``cube_var`` / ``gt_var`` name the cube / ground-truth variable of a MATLAB or HDF5 file
    when the shape rules cannot find it alone. ``interleave`` (``bip``, ``bil``, ``bsq``;
    :data:`~edge_had.io.raw.LAYOUTS`): how the cube of a MATLAB, HDF5 or ``.npy`` file is stored,
    ``bip`` (rows, cols, bands) when None; an ENVI header says its own, so giving it there is an
    error. ``gt_path`` reads the ground truth from another
    file (see :func:`load_mask`); ``gt_var`` then names the mask variable inside that file. Without
    either, a file that stores no ground truth takes the map beside it, if any
    (:func:`ground_truth_beside`: ``NAME_gt.npy`` or ``NAME_gt.hdr``); ``meta["gt_path"]`` names
    the file a map was read from.
    ``name`` defaults to the file name without its suffix. ``saturation``: the sensor's
    saturation level (e.g. 4095 for 12 bits; None, the default: none known): a pixel with a good
    band at or above it is masked (``Scene.valid``, counted in ``Scene.masked``). No standard ENVI
    header field holds it, so it is never read from the file.
    """
    path = Path(path)
    raw = read_raw(
        path, cube_var=cube_var, gt_var=None if gt_path is not None else gt_var, interleave=interleave
    )
    beside = ground_truth_beside(path) if gt_path is None else None
    if beside is not None and raw.gt is not None:  # the file's own map wins, but not in silence
        raw.meta.setdefault("notes", []).append(
            f"{beside.name} beside it is not used: the file holds its own ground truth "
            f"({raw.meta.get('gt_var', 'its map')}); give it with --gt to use it instead"
        )
        beside = None
    if gt_path is not None or beside is not None:
        mask_path, mask_var = (gt_path, gt_var) if gt_path is not None else (beside, None)
        assert mask_path is not None
        if raw.cube.ndim == 3:
            notes = raw.meta.setdefault("notes", [])
            raw.gt = load_ground_truth(mask_path, path, raw.cube.shape[:2], var=mask_var, notes=notes)
        else:  # not a cube: make_scene says so
            raw.gt = load_mask(mask_path, var=mask_var)
        raw.meta["gt_path"] = str(mask_path)
    return make_scene(
        raw.cube,
        name=path.stem if name is None else name,
        gt=raw.gt,
        wavelengths=raw.wavelengths,
        fwhm=raw.fwhm,
        good_bands=raw.good_bands,
        no_data_value=raw.no_data_value,
        saturation=saturation,
        source=path,
        meta=raw.meta,
    )


def load_mask(
    path: str | Path,
    *,
    var: str | None = None,
    shape: tuple[int, int] | None = None,
    notes: list[str] | None = None,
) -> np.ndarray:
    """A 2-D array (ground truth) from ``.npy``, single-band ENVI, ``.mat`` or HDF5 - from an ENVI
    map whose pixels hold its ``data ignore value``, a ``numpy.ma`` masked array with those
    pixels masked (unlabelled; ``np.asarray`` would drop the mask, and count them as anomalies).

    In MATLAB/HDF5 files the mask is ``var``, else the only 2-D numeric array (of ``shape``,
    when given). An array of shape (rows, cols, 1) is accepted as (rows, cols). The shape of
    a mask read from ``.npy``/ENVI is not checked here (:func:`make_scene` does). ``notes`` gets
    what an ENVI map's reader noted (a header in Latin-1, ...), as a scene's notes.
    """
    path = Path(path)
    kind = _kind(path)
    if kind == "container":
        mask = read_container_mask(path, var=var, shape=shape)
    else:
        _refuse_variable_names(path, kind, var=var)
        mask = _read_npy(path) if kind == "npy" else _envi_map(path, notes)
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
    if mask.ndim != 2:
        raise SceneError(f"expected a 2-D mask, got an array of shape {mask.shape}", path)
    return np.asanyarray(mask)  # an ENVI map's unlabelled pixels stay masked


def list_scenes(folder: str | Path) -> list[Path]:
    """The scene files of ``folder`` (suffixes in :data:`SCENE_SUFFIXES`), sorted by name.

    ENVI data files are not listed (their ``.hdr`` is); neither are hidden files, checksum
    lists or READMEs.
    """
    folder = Path(folder)
    if not folder.is_dir():
        problem = "is not a folder" if folder.exists() else "scene folder does not exist"
        raise SceneError(problem, folder)
    found = sorted(
        entry
        for entry in folder.iterdir()
        if entry.suffix.lower() in SCENE_SUFFIXES and not entry.name.startswith(".") and entry.is_file()
    )
    maps = _map_names([name for entry in found for name in scene_names(entry)])
    scenes = [entry for entry in found if not _is_map(entry, maps)]  # a scene's map
    if not scenes:
        raise SceneError(f"no scene file ({', '.join(SCENE_SUFFIXES)}) in this folder", folder)
    return scenes


def load_ground_truth(
    mask_path: str | Path,
    scene_path: str | Path,
    pixels: tuple[int, int],
    var: str | None = None,
    notes: list[str] | None = None,
) -> np.ndarray:
    """The map in ``mask_path`` (:func:`load_mask`; ``var`` inside a MATLAB/HDF5 file) as the bool
    ground truth of the scene file ``scene_path``, ``pixels`` (rows, cols) - a ``numpy.ma`` masked
    array when it leaves pixels unlabelled (:func:`~edge_had.io.scene.labelled_pixels`): a map
    that does not fit is a :class:`SceneError` naming both files. ``notes``: as :func:`load_mask`'s."""
    gt = load_mask(mask_path, var=var, shape=pixels, notes=notes)
    try:
        anomalies, labelled = ground_truth_mask(gt, pixels, Path(mask_path))
    except SceneError as error:
        raise SceneError(f"{error.problem} of {Path(scene_path).name}", mask_path) from None
    if notes is not None and (nan_note := nan_labels_note(gt, Path(mask_path).name)) is not None:
        notes.append(nan_note)
    return anomalies if labelled is None else np.ma.masked_array(anomalies, mask=~labelled)


def ground_truth_beside(path: str | Path) -> Path | None:
    """The ground-truth map beside the scene file ``path``: ``NAME_gt.npy`` or ``NAME_gt.hdr`` (the
    suffix in any case) in its folder, ``NAME`` the scene's name (:func:`scene_names`: an ENVI
    image's from its header, whichever of its files ``path`` is), or None. Two there is an error:
    which one is meant cannot be told."""
    path = Path(path)
    if path.suffix.lower() != ".hdr" and (header := header_beside(path)) is not None:
        path = header  # an ENVI data file: its scene is named by its header
    wanted = _map_names(scene_names(path))
    beside = sorted(entry for entry in path.parent.iterdir() if _is_map(entry, wanted) and entry.is_file())
    if len(beside) > 1:
        raise SceneError(
            f"two ground-truth maps beside it ({', '.join(p.name for p in beside)}): keep one", path
        )
    return beside[0] if beside else None


def scene_names(path: Path) -> list[str]:
    """The names a scene file's map may be named after: its name without its suffix, and for an
    ENVI header named after its data file (``scan.img.hdr``) also without that (``scan``)."""
    names = [path.stem]
    inner = Path(path.stem)
    if path.suffix.lower() == ".hdr" and inner.suffix.lower() in ENVI_DATA_SUFFIXES:
        names.append(inner.stem)
    return names


def _map_names(names: list[str]) -> set[str]:
    """The names (lower case) of the maps of scenes named ``names``: ``NAME_gt`` (any case: scan_GT)."""
    return {(name + GROUND_TRUTH_NAME).lower() for name in names}


def _is_map(entry: Path, maps: set[str]) -> bool:
    """Whether the file ``entry`` is one of the maps named ``maps`` (:func:`_map_names`): a
    ``.npy``/``.hdr`` (any case) whose name - or, for ``scan_gt.img.hdr``, its data file's - is one."""
    return entry.suffix.lower() in GROUND_TRUTH_SUFFIXES and not maps.isdisjoint(
        name.lower() for name in scene_names(entry)
    )


def scene_sha256(path: str | Path) -> str:
    """The SHA-256 that identifies a scene file's data (training records, ``trained_on``): the
    file's own, or for an ENVI image one over its header's and its data file's (a header alone
    names two images with other pixels alike)."""
    path = Path(path)
    if _kind(path) != "envi":
        return sha256_file(path)
    header, data = envi_files(path)
    return hashlib.sha256(f"envi:{sha256_file(header)}:{sha256_file(data)}".encode()).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 digest of a file, read in 1 MiB blocks."""
    path = Path(path)
    _check_file(path)
    digest = hashlib.sha256()
    with reading(path, "file"), path.open("rb") as stream:
        for block in iter(lambda: stream.read(_CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def read_raw(
    path: str | Path,
    *,
    cube_var: str | None = None,
    gt_var: str | None = None,
    interleave: str | None = None,
) -> RawScene:
    """A scene file's arrays as stored, not yet validated (options as :func:`load_scene`'s): an
    ENVI or ``.npy`` cube is a memory map, nothing of it read yet (``edge-had stream`` reads
    it line by line: :func:`edge_had.stream.sources.file_lines`); a MATLAB/HDF5 cube is in memory."""
    path = Path(path)
    kind = _kind(path)
    if interleave is not None and interleave not in LAYOUTS:
        raise SceneError(f"unknown interleave {interleave!r}: expected one of {', '.join(LAYOUTS)}", path)
    if kind == "envi" and interleave is not None:
        raise SceneError(
            f"interleave {interleave} given for an ENVI file: its header says how it is stored", path
        )
    stored = interleave or "bip"
    if kind == "container":
        return read_container_scene(path, cube_var=cube_var, gt_var=gt_var, interleave=stored)
    _refuse_variable_names(path, kind, cube_var=cube_var, gt_var=gt_var)
    if kind == "npy":
        array = _read_npy(path)
        # another shape is make_scene's error
        cube = array.transpose(to_rows_cols_bands(stored)) if array.ndim == 3 else array
        note = layout_note(array, stored, path)  # (a bands-first array read as bip: scrambled)
        meta = {
            "format": "npy",
            "dtype": str(cube.dtype),
            "interleave": stored,
            "notes": [note] if note else [],
        }
        return RawScene(cube=cube, meta=meta)
    return _read_envi_file(path)


def _kind(path: Path) -> str:
    """``"container"`` (MATLAB/HDF5), ``"npy"`` or ``"envi"``; errors for a missing or unknown file."""
    _check_file(path)
    suffix = path.suffix.lower()
    if suffix in CONTAINER_SUFFIXES:
        return "container"
    if suffix == ".npy":
        return "npy"
    if suffix == ".hdr" or header_beside(path) is not None:
        return "envi"
    raise SceneError(
        f"unknown file type {suffix or '(no suffix)'}: expected one of {', '.join(SCENE_SUFFIXES)} "
        "or an ENVI data file with its .hdr beside it",
        path,
    )


def _check_file(path: Path) -> None:
    if not path.exists():
        raise SceneError("file not found", path)
    if not path.is_file():
        raise SceneError("is not a file", path)


def _refuse_variable_names(path: Path, kind: str, **names: str | None) -> None:
    """Variable names only mean something in MATLAB/HDF5 files; refuse them elsewhere."""
    given = [option for option, value in names.items() if value is not None]
    if given:
        raise SceneError(f"{', '.join(given)} applies to MATLAB/HDF5 files, not to {kind} files", path)


def _read_envi_file(path: Path) -> RawScene:
    if path.suffix.lower() == ".hdr":
        return read_envi(path, source=path)
    header = header_beside(path)
    if header is None:
        raise SceneError("no ENVI header (.hdr) beside this data file", path)
    return read_envi(header, path, source=path)


def _envi_map(path: Path, notes: list[str] | None = None) -> np.ndarray:
    """An ENVI map's array (its reader's notes into ``notes``): a ``numpy.ma`` masked array when
    pixels hold its ``data ignore value`` - not labelled, left out of every metric (``gt != 0``
    would make each an anomaly) -, with a note saying how many."""
    raw = _read_envi_file(path)
    found = list(raw.meta.get("notes", []))
    labels: np.ndarray = raw.cube
    unlabelled = None if raw.no_data_value is None else raw.cube == raw.no_data_value
    if unlabelled is not None and unlabelled.any():
        labels = np.ma.masked_array(raw.cube, mask=unlabelled)
        background = " (0 is the background label: if it is meant here, remove the field)"
        found.append(
            f"{int(unlabelled.sum())} pixels of the ground-truth map {path.name} hold its 'data ignore "
            f"value' {raw.no_data_value:g}: unlabelled, scored but left out of every metric"
            f"{background if raw.no_data_value == 0 else ''}"
        )
    if notes is not None:
        notes.extend(found)
    return labels


def _read_npy(path: Path) -> np.ndarray:
    """A ``.npy`` array, memory-mapped; pickles and object arrays are refused."""
    with reading(path, ".npy file"):
        with path.open("rb") as stream:
            if stream.read(1) == _PICKLE_OPCODE:
                raise SceneError("is a pickle, not a .npy array; pickles are refused", path)
            stream.seek(0)
            dtype = _npy_header_dtype(stream)
        if dtype.hasobject:
            raise SceneError(f"holds an object array ({dtype}) that needs pickle; pickles are refused", path)
        return np.load(path, mmap_mode="r", allow_pickle=False)


def _npy_header_dtype(stream: BinaryIO) -> np.dtype:
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        _, _, dtype = np.lib.format.read_array_header_1_0(stream)
    else:
        _, _, dtype = np.lib.format.read_array_header_2_0(stream)
    return dtype
