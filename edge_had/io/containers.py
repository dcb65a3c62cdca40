"""Read scenes and masks from files of named arrays: MATLAB v5, MATLAB v7.3 and plain HDF5.

* MATLAB v5 (and v4) ``.mat``: :func:`scipy.io.loadmat`.
* MATLAB v7.3 ``.mat``: an HDF5 file (detected with :func:`h5py.is_hdf5`, a 512-byte userblock
  is fine). MATLAB writes arrays column-major, so h5py sees every axis reversed: shapes and data
  are transposed back here. Variables are the root datasets; structs, cells and strings
  (``MATLAB_class`` other than numeric/logical) are not numeric arrays.
* plain HDF5 ``.h5``/``.hdf5``: every dataset (nested names like ``group/cube``) in the store
  convention (rows, cols, bands), no transpose. Wavelengths/fwhm may also come from an attribute
  ``wavelength``/``wavelengths``/``fwhm`` of the cube dataset or of the file, in the unit of an
  attribute ``wavelength_units`` (else nm, or micrometres when all are below 30; see
  :mod:`edge_had.io.units`: .mat files carry no unit, so the same guess applies to them).

In every format the cube is read as stored in ``interleave`` order (default ``bip``: rows, cols,
bands; ``bil`` rows, bands, cols - PRISMA's cubes, for one -; ``bsq`` bands first), then
transposed to (rows, cols, bands). Which arrays are the cube, ground truth and band vectors is
decided by :mod:`edge_had.io.variables`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.io
import scipy.sparse

from edge_had.io.plausibility import layout_note
from edge_had.io.raw import RawScene, reading, to_rows_cols_bands
from edge_had.io.units import band_centres_nm, unit_text
from edge_had.io.variables import Variable, select_mask, select_variables

MATLAB_NUMERIC_CLASSES = frozenset(
    {"double", "single", "logical", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"}
)
_NUMERIC_KINDS = "biuf"
_WAVELENGTH_ATTRS = ("wavelength", "wavelengths")
_UNIT_ATTRS = ("wavelength_units", "wavelength units")  # not "units": that is the pixels' unit
_FWHM_ATTRS = ("fwhm",)


@dataclass
class Container:
    """The arrays of one open file: their descriptions, and how to read one by name."""

    format: str
    variables: list[Variable]
    load: Callable[[str], np.ndarray]
    attributes: Callable[[str], Mapping[str, Any]]  # a variable's, with the file's
    own_attributes: Callable[[str], Mapping[str, Any]] = lambda name: {}  # a variable's alone


def read_container_scene(
    path: Path, *, cube_var: str | None = None, gt_var: str | None = None, interleave: str = "bip"
) -> RawScene:
    """The cube, ground truth and band vectors of a MATLAB or HDF5 file; the cube stored in
    ``interleave`` order (:data:`~edge_had.io.raw.LAYOUTS`), returned as (rows, cols, bands)."""
    with open_container(path) as container:
        chosen = select_variables(
            container.variables, path, cube_var=cube_var, gt_var=gt_var, interleave=interleave
        )
        stored = container.load(chosen.cube)
        cube = stored.transpose(to_rows_cols_bands(interleave))
        attrs = container.attributes(chosen.cube)
        names = {
            "cube_var": chosen.cube,
            "gt_var": chosen.gt,
            "wavelength_var": chosen.wavelengths,
            "fwhm_var": chosen.fwhm,
        }
        meta: dict[str, Any] = {"format": container.format, "dtype": str(cube.dtype)}
        meta["interleave"] = interleave
        meta.update({key: name for key, name in names.items() if name is not None})
        wavelengths = _vector_or_attribute(container, chosen.wavelengths, attrs, _WAVELENGTH_ATTRS)
        fwhm = _vector_or_attribute(container, chosen.fwhm, attrs, _FWHM_ATTRS)
        units = unit_text(_wavelength_units(container, chosen.wavelengths, attrs))
        meta["wavelength_units"] = units
        wavelengths, fwhm, note = band_centres_nm(wavelengths, fwhm, units)  # as ENVI's: the same rules
        layout = layout_note(stored, interleave, path)  # (a bands-first cube read as bip: scrambled)
        meta["notes"] = [text for text in (*chosen.notes, note, layout) if text is not None]
        return RawScene(
            cube=cube, gt=_load_optional(container, chosen.gt), wavelengths=wavelengths, fwhm=fwhm, meta=meta
        )


def _wavelength_units(container: Container, variable: str | None, cube_attrs: Mapping[str, Any]) -> object:
    """The band centres' unit: an attribute of their own dataset (``units`` there, since it
    describes that dataset), else a ``wavelength_units`` attribute of the cube or the file; a
    vector named like "wavenumber" without one is in cm^-1."""
    own = {} if variable is None else container.own_attributes(variable)
    for key in (*_UNIT_ATTRS, "units", "unit"):
        if key in own:
            return own[key]
    found = next((cube_attrs[key] for key in _UNIT_ATTRS if key in cube_attrs), None)
    if found is None and variable is not None and "wavenumber" in variable.lower():
        return "cm-1"
    return found


def read_container_mask(
    path: Path, *, var: str | None = None, shape: tuple[int, int] | None = None
) -> np.ndarray:
    """The ground-truth mask of a MATLAB or HDF5 file (chosen by :func:`select_mask`)."""
    with open_container(path) as container:
        return container.load(select_mask(container.variables, path, var=var, shape=shape))


@contextmanager
def open_container(path: Path) -> Iterator[Container]:
    """Open ``path`` as MATLAB v5, MATLAB v7.3 or plain HDF5 (by suffix and content).

    Any library error, while opening or inside the ``with`` block, becomes a SceneError.
    """
    matlab = path.suffix.lower() == ".mat"
    if matlab and not h5py.is_hdf5(path):
        with reading(path, "MATLAB v5 file"):
            yield _matlab_v5(scipy.io.loadmat(path, squeeze_me=False))
        return
    what = "MATLAB v7.3 (HDF5) file" if matlab else "HDF5 file"
    with reading(path, what), h5py.File(path, "r") as handle:
        yield _matlab_v73(handle) if matlab else _hdf5(handle)


def _matlab_v5(contents: dict[str, Any]) -> Container:
    # a sparse matrix (a map saved with MATLAB's sparse(): mostly zeros) is read dense, as stored
    arrays = {
        name: value.toarray() if scipy.sparse.issparse(value) else value
        for name, value in contents.items()
        if not name.startswith("__")
    }
    variables = [
        Variable(name, tuple(np.shape(value)), _is_numeric_array(value)) for name, value in arrays.items()
    ]
    return Container("matlab-v5", variables, arrays.__getitem__, lambda name: {})


def _matlab_v73(handle: h5py.File) -> Container:
    datasets = {
        name: item
        for name, item in handle.items()
        if isinstance(item, h5py.Dataset) and not name.startswith("#")
    }
    variables = [Variable(name, ds.shape[::-1], _is_matlab_numeric(ds)) for name, ds in datasets.items()]
    # a struct's fields are not variables; listed, so that "no cube" does not read "the file is empty"
    variables += [
        Variable(name, (), False, group=True)
        for name, item in handle.items()
        if isinstance(item, h5py.Group) and not name.startswith("#")
    ]

    def load(name: str) -> np.ndarray:
        return np.asarray(datasets[name][()]).T

    return Container("matlab-v7.3", variables, load, lambda name: {})


def _hdf5(handle: h5py.File) -> Container:
    datasets: dict[str, h5py.Dataset] = {}

    def collect(name: str, item: object) -> None:  # returning None lets visititems go on
        if isinstance(item, h5py.Dataset):
            datasets[name] = item

    handle.visititems(collect)
    variables = [Variable(name, ds.shape, ds.dtype.kind in _NUMERIC_KINDS) for name, ds in datasets.items()]

    def attributes(name: str) -> dict[str, Any]:  # the file's, overridden by the dataset's own
        return {**handle.attrs, **datasets[name].attrs}

    return Container(
        "hdf5",
        variables,
        lambda name: np.asarray(datasets[name][()]),
        attributes,
        lambda name: datasets[name].attrs,
    )


def _is_numeric_array(value: object) -> bool:
    return isinstance(value, np.ndarray) and value.dtype.kind in _NUMERIC_KINDS


def _is_matlab_numeric(ds: h5py.Dataset) -> bool:
    """Numeric per ``MATLAB_class`` (when present), not an empty-array placeholder, numeric dtype."""
    matlab_class = ds.attrs.get("MATLAB_class")
    if isinstance(matlab_class, bytes):
        matlab_class = matlab_class.decode("ascii", "replace")
    if matlab_class is not None and matlab_class not in MATLAB_NUMERIC_CLASSES:
        return False
    return not ds.attrs.get("MATLAB_empty", 0) and ds.dtype.kind in _NUMERIC_KINDS


def _load_optional(container: Container, name: str | None) -> np.ndarray | None:
    return None if name is None else container.load(name)


def _vector_or_attribute(
    container: Container, name: str | None, attrs: Mapping[str, Any], keys: tuple[str, ...]
) -> np.ndarray | None:
    """A band vector read from variable ``name``, else from the first attribute in ``keys``."""
    if name is not None:
        return np.asarray(container.load(name), dtype=np.float64).ravel()
    for key in keys:
        if key in attrs:
            return np.asarray(attrs[key], dtype=np.float64).ravel()
    return None
