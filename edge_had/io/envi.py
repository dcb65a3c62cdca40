"""Read ENVI images (``.hdr`` header + raw data file, BIL/BIP/BSQ) through the ``spectral`` package.

The data file is memory-mapped (``numpy.memmap`` in its storage order, viewed as (lines, samples,
bands) = (rows, cols, bands)) in its stored dtype and byte order, whatever the file's interleave
(bsq, bil or bip, any case; spectral parses the header). From the header: ``wavelength`` and
``fwhm`` (converted to nm using ``wavelength units``, dropped when that unit is not a length:
:mod:`edge_had.io.units`), ``bbl`` (bad-band list -> ``good_bands``) and ``data ignore value``
(-> no-data value). A data file shorter than the header promises is reported as truncated, a
longer one as misdescribed. spectral reads UTF-8 headers only: one in Latin-1 or UTF-16, or with
a byte-order mark, is read through a UTF-8 copy, with a note.

A header with the wrong ``interleave`` or ``byte order`` still describes a file of the right size:
its samples are read scrambled, and nothing fails (BIL data labelled ``bip``: the FX10 reviewer's
AUC 1.0 -> 0.83, with "invalid px" as the only sign). So every image of 8
bands or more is checked when it is opened (:func:`~edge_had.io.plausibility.spectral_share`: whether
its pixels read as spectra). A cube below :data:`~edge_had.io.plausibility.PLAUSIBLE_SHARE` that
another reading of its bytes (interleave, byte order) lifts above it gets a note (``meta["notes"]``,
which ``detect`` and ``eval`` print and the reports carry) naming the file, the header fields to
check and that reading. Limits (a review): a dark or noisy file reads as no spectra in any layout,
so it gets no note (no reading to point to); and a raw, non-flat-fielded scene of one material
(a uniform field under cross-track vignetting) can read as spectra in the wrong layout too - BIL
labelled bip scored 0.961 there, its right reading 0.942 - so such a mislabel is not caught.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_had.errors import SceneError
from edge_had.io.plausibility import PLAUSIBLE_SHARE, spectral_share
from edge_had.io.raw import LAYOUTS, RawScene, reading, to_rows_cols_bands
from edge_had.io.units import band_centres_nm

HEADER_SUFFIXES = (".hdr", ".HDR")


def header_beside(data_path: Path) -> Path | None:
    """The ENVI header of a data file (``scene.hdr`` or ``scene.img.hdr`` beside ``scene.img``)."""
    for suffix in HEADER_SUFFIXES:
        for candidate in (data_path.with_suffix(suffix), data_path.with_name(data_path.name + suffix)):
            if candidate != data_path and candidate.is_file():
                return candidate
    return None


def envi_files(path: Path) -> tuple[Path, Path]:
    """``(header, data file)`` of an ENVI image given by either of them."""
    header = path if path.suffix.lower() == ".hdr" else header_beside(path)
    if header is None:
        raise SceneError("no ENVI header (.hdr) beside this data file", path)
    data = path if header != path else Path(_open_image(header, None, path)[0].filename)
    return header, data


def read_envi(header: Path, data: Path | None = None, *, source: Path | None = None) -> RawScene:
    """The memory-mapped cube and band metadata of an ENVI image; errors name ``source`` (default:
    header). ``meta["notes"]``: band centres dropped for their unit, a cube that does not read as
    spectra (:func:`misread_note`)."""
    source = header if source is None else source
    image, header_note = _open_image(header, data, source)
    metadata: Mapping[str, Any] = image.metadata
    interleave = _interleave(metadata, source)
    cube = _memmap(image, interleave, source)
    bands = _band_fields(metadata, source)
    byte_order = int(metadata.get("byte order", 0))  # 0 or 1: _open_image checked it
    with reading(source, "ENVI data file"):  # its own memory maps (a process's address-space limit)
        misread = misread_note(image, header, (interleave, byte_order), bands.good_bands, bands.no_data_value)
    return RawScene(
        cube=cube,
        wavelengths=bands.wavelengths,
        fwhm=bands.fwhm,
        good_bands=bands.good_bands,
        no_data_value=bands.no_data_value,
        meta={
            "format": "envi",
            "dtype": str(np.dtype(image.dtype)),
            "interleave": interleave,
            "byte_order": "big" if byte_order == 1 else "little",
            "header": str(header),
            "data_file": str(image.filename),
            "wavelength_units": bands.wavelength_units,
            "notes": [
                text
                for text in (
                    header_note,
                    bands.unit_note,
                    _impossible_no_data(bands.no_data_value, image),
                    misread,
                )
                if text is not None
            ],
        },
    )


def _impossible_no_data(no_data_value: float | None, image: Any) -> str | None:
    """A note when an integer file's ``data ignore value`` is no value of its data type (-9999 or
    1024.5 on uint16: a header copied from a float product), so no pixel can be masked for it."""
    dtype = np.dtype(image.dtype)
    if no_data_value is None or dtype.kind not in "iu":
        return None
    limits = np.iinfo(dtype)
    if (
        np.isfinite(no_data_value)
        and no_data_value.is_integer()
        and limits.min <= no_data_value <= limits.max
    ):
        return None
    return (
        f"the 'data ignore value' {no_data_value:g} of {image.filename} is no {dtype.name} value, as its "
        "data are stored: no pixel is masked for it"
    )


@dataclass(frozen=True)
class BandFields:
    """What an ENVI header says of its bands: centres and widths in nm (None: not given, or in a
    unit that is no length - ``unit_note`` says so), the good-band mask (``bbl``; None: all good),
    the no-data value (``data ignore value``) and the unit as written."""

    wavelengths: np.ndarray | None
    fwhm: np.ndarray | None
    good_bands: np.ndarray | None
    no_data_value: float | None
    wavelength_units: Any
    unit_note: str | None


def _band_fields(metadata: Mapping[str, Any], source: Path) -> BandFields:
    units = _single(metadata.get("wavelength units"))  # (``{Nanometers}`` in braces: a list)
    wavelengths, fwhm, note = band_centres_nm(
        _header_floats(metadata, "wavelength", source), _header_floats(metadata, "fwhm", source), units
    )
    return BandFields(
        wavelengths, fwhm, _good_bands(metadata, source), _no_data_value(metadata, source), units, note
    )


@dataclass(frozen=True)
class SensorHeader:
    """A camera's ENVI header read for the line loop (:func:`read_sensor_header`): pixels per line
    (``samples``), bands, and what :func:`~edge_had.stream.onboard.build_pipeline` takes of it
    (:meth:`pipeline_options`); ``notes``: what was not read as written."""

    samples: int
    bands: int
    fields: BandFields
    notes: tuple[str, ...]

    def pipeline_options(self) -> dict[str, Any]:
        """``wavelengths`` (nm), ``good_bands`` and ``no_data_value`` for ``build_pipeline``."""
        fields = self.fields
        return {"wavelengths": fields.wavelengths, "good_bands": fields.good_bands,
                "no_data_value": fields.no_data_value}  # fmt: skip


def read_sensor_header(header: str | Path) -> SensorHeader:
    """A camera's ENVI header as ``stream --source FILE.hdr`` reads it - band centres converted to
    nm from its ``wavelength units``, ``bbl``, ``data ignore value``, a header in Latin-1 or with a
    byte-order mark - without a data file (a live camera has none yet): what a camera loop gives
    ``build_pipeline`` so that its live lines score as the file's would. SceneError naming the
    header for what it cannot read."""
    import spectral.io.envi as spectral_envi

    header = Path(header)
    with _header_spectral_reads(header) as (readable, note):
        with reading(header, "ENVI header"), _spectral_quietly():
            metadata = spectral_envi.read_envi_header(str(readable))
    sizes = {key: _whole_number(metadata, key, header, least=1, default="") for key in ("samples", "bands")}
    fields = _band_fields(metadata, header)
    for name, values in (("wavelength", fields.wavelengths), ("bbl", fields.good_bands)):
        if values is not None and values.size != sizes["bands"]:
            raise SceneError(
                f"the ENVI header's {name!r} has {values.size} values for {sizes['bands']} bands", header
            )
    notes = tuple(text for text in (note, fields.unit_note) if text is not None)
    return SensorHeader(sizes["samples"], sizes["bands"], fields, notes)


def misread_note(
    image: Any,
    header: Path,
    declared: tuple[str, int],
    good_bands: np.ndarray | None,
    no_data_value: float | None,
) -> str | None:
    """A note when the image read as its header says (``declared``: interleave, byte order) does
    not read as spectra (:func:`spectral_share` below :data:`PLAUSIBLE_SHARE`), naming the header
    fields to check and the other readings of its bytes that do look right - each other interleave
    and byte order, and the declared ones with ``lines`` and ``samples`` swapped (a hand-written BIL
    header: its "pixels" then mix bands); None when it reads as spectra, gives no verdict, or no
    other reading looks right either - a correctly labelled dark
    or noisy file (little light over the sensor noise: 0.57 at a tenth of an FX10's usual signal)
    reads as no spectra in any layout, and blaming its header would send the user the wrong way.
    Each reading samples its own memory map, closed after it: the
    pages it read (2 MiB folios, ~30 MiB of a 48 MiB file) do not stay in the process's memory, as
    they would in the map the cube is read from."""
    share = spectral_share(_reading(image, *declared), good_bands, no_data_value)
    if share is None or share >= PLAUSIBLE_SHARE:
        return None
    interleave, byte_order = declared
    orders = (0, 1) if np.dtype(image.dtype).itemsize > 1 else (byte_order,)
    readings = [(layout, order, False) for layout in LAYOUTS for order in orders]
    rows, cols, _ = image.shape
    if rows != cols:  # swapped, the same sizes
        readings.append((interleave, byte_order, True))
    plausible = []
    for layout, order, swapped in readings:
        if (layout, order, swapped) != (interleave, byte_order, False):
            other_share = spectral_share(_reading(image, layout, order, swapped), good_bands, no_data_value)
            if other_share is not None and other_share >= PLAUSIBLE_SHARE:
                if swapped:
                    way = f"lines = {cols} and samples = {rows}"
                else:
                    way = f"{layout} with byte order {order}"
                plausible.append(f"{way} ({other_share:.3f})")
    if not plausible:
        return None
    hint = f"; read as {' or as '.join(plausible)} they do"
    return (
        f"{image.filename} does not read as spectra - check `interleave` / `byte order` / `lines` / "
        f"`samples` in the header {header} ({interleave}, byte order {byte_order}, lines = {rows}, "
        f"samples = {cols}): its sampled pixels have {share:.3f} of their spectral energy in 3 "
        f"components, real spectra >= {PLAUSIBLE_SHARE}{hint}"
    )


def _reading(image: Any, interleave: str, byte_order: int, swapped: bool = False) -> np.ndarray:
    """The image's data file mapped as a (rows, cols, bands) cube stored in ``interleave`` with
    ``byte_order`` (0: little-endian, 1: big-endian), whatever its header says; ``swapped``: with
    its header's lines and samples the other way round."""
    rows, cols, bands = image.shape
    if swapped:
        rows, cols = cols, rows
    sizes = {"rows": rows, "cols": cols, "bands": bands}
    dtype = np.dtype(image.dtype).newbyteorder("<" if byte_order == 0 else ">")
    data = np.memmap(image.filename, dtype=dtype, mode="r", offset=image.offset,
                     shape=tuple(sizes[axis] for axis in LAYOUTS[interleave]))  # fmt: skip
    return data.transpose(to_rows_cols_bands(interleave))


#: ENVI's data type codes with a numpy type (6 and 9, complex, are refused by make_scene, named)
ENVI_DATA_TYPES = ("1", "2", "3", "4", "5", "6", "9", "12", "13", "14", "15")


@contextlib.contextmanager
def _spectral_quietly() -> Iterator[None]:
    """spectral lower-cases a header's keys (``Wavelength Units``, as some camera software writes
    them) with a UserWarning on every file, and logs a WARNING for a ``wavelength``, ``fwhm`` or
    ``bbl`` it cannot parse; the keys are read lower-case here and those fields parsed again
    (:func:`_header_floats`: a trailing comma taken, anything else refused by name), so nothing is
    lost - the logged line only repeated, or contradicted, what the reader says."""
    import logging

    logger = logging.getLogger("spectral")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message="Parameters with non-lowercase names", category=UserWarning
            )
            yield
    finally:
        logger.setLevel(level)


#: Header fields that must be whole numbers (spectral's int() failed on "20.0" naming none).
WHOLE_NUMBER_FIELDS = ("samples", "lines", "bands", "header offset", "data type", "byte order")


def _whole_number(
    fields: Mapping[str, Any], key: str, source: Path, where: str = "", *, least: int = 0, default: str = "0"
) -> int:
    """A header field that must be a whole number (``least`` or more; ``default`` when absent), or
    a SceneError naming it (spectral's int() failed naming no field, or took "-20")."""
    value = str(_single(fields.get(key, default))).strip()
    if not value.isdigit() or int(value) < least:
        at_least = f" >= {least}" if least else ""
        raise SceneError(
            f"the ENVI header field {key!r}{where} is {value!r}: expected a whole number{at_least}", source
        )
    return int(value)


def _open_image(header: Path, data: Path | None, source: Path) -> tuple[Any, str | None]:
    """The spectral image of ``header``, after checking the header fields spectral would take
    wrongly or fail on with a bare KeyError: ``data type`` (7 string, 8 struct, 10 pointer, 11 object:
    no pixels) and ``byte order`` (spectral reads any value but 0 as big-endian); and a note when
    the header was not read as written (:func:`_header_spectral_reads`)."""
    import spectral.io.envi as spectral_envi  # lazy: only ENVI files need the spectral package

    where = "" if header == source else f" in {header}"
    with _header_spectral_reads(header) as (readable, note):
        with reading(source, "ENVI file"), _spectral_quietly():
            fields = spectral_envi.read_envi_header(str(readable))
        for key in WHOLE_NUMBER_FIELDS:
            _whole_number(fields, key, source, where)
        code = str(_single(fields.get("data type", ""))).strip()
        if code and code not in ENVI_DATA_TYPES:
            raise SceneError(
                f"unsupported ENVI 'data type' {code}{where}: expected one of {', '.join(ENVI_DATA_TYPES)}",
                source,
            )
        order = str(_single(fields.get("byte order", "0"))).strip()
        if order not in ("0", "1"):
            raise SceneError(
                f"ENVI 'byte order' {order}{where}: expected 0 (little-endian) or 1 (big-endian)", source
            )
        if data is None and readable != header:  # spectral would look for it beside the copy
            data = _data_file_beside(header, str(_single(fields.get("interleave", ""))), source)
        try:
            with reading(source, "ENVI file"), _spectral_quietly():
                image = spectral_envi.open(str(readable), None if data is None else str(data))
        except SceneError as error:
            if not isinstance(error.__cause__, spectral_envi.EnviDataFileNotFoundError):
                raise
            raise _no_data_file(header, source) from error.__cause__
    if isinstance(image, spectral_envi.SpectralLibrary):
        raise SceneError("is an ENVI spectral library, not an image", source)
    return image, note


#: A header larger than this is not transcoded (an ENVI header is a few kB of text).
HEADER_MAX_BYTES = 2**20


@contextlib.contextmanager
def _header_spectral_reads(header: Path) -> Iterator[tuple[Path, str | None]]:
    """The header as spectral can read it - it reads UTF-8 text starting "ENVI" - and a note if
    that is a copy: a header saved with a UTF-8 byte-order mark ("missing ENVI"), in UTF-16, or not
    in UTF-8 (a "\u00b5m" or an accented name written in Latin-1 by Windows software: "appears to be
    a binary file") is read through a UTF-8 copy (:func:`header_text`: an ENVI header's keys and
    numbers are ASCII in any of them)."""
    try:
        with header.open("rb") as stream:
            raw = stream.read(HEADER_MAX_BYTES + 1)
    except OSError:  # spectral says why, naming the file
        yield header, None
        return
    text, said = header_text(raw)
    if not said or len(raw) > HEADER_MAX_BYTES or not text.startswith("ENVI"):
        yield header, None  # spectral's own error (binary, not ENVI) names it
        return
    import shutil
    import tempfile

    note = f"the ENVI header {header} has {' and '.join(said)}: read through a UTF-8 copy"
    try:
        folder = tempfile.mkdtemp(prefix="edge-had-header-")
    except OSError as error:
        raise SceneError(
            f"{note}, which cannot be written to the temporary folder ({error})", header
        ) from error
    try:
        copy = Path(folder) / header.name
        copy.write_text(text, encoding="utf-8")
        yield copy, note
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def header_text(raw: bytes) -> tuple[str, list[str]]:
    """An ENVI header's bytes as text - UTF-16 after its byte-order mark, UTF-8 without one,
    else Latin-1 (every byte a character) - and what of that was not plain UTF-8 (empty when
    nothing)."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16, as Windows' "Unicode" saves text
        with contextlib.suppress(UnicodeDecodeError):
            return raw.decode("utf-16"), ["UTF-16 text"]
    body = raw.removeprefix(b"\xef\xbb\xbf")
    said = [] if body == raw else ["a UTF-8 byte-order mark"]
    if _is_utf8(body):
        return body.decode("utf-8"), said
    return body.decode("latin-1"), [*said, "text not in UTF-8 (read as Latin-1)"]


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _data_file_beside(header: Path, interleave: str, source: Path) -> Path:
    """The data file of ``header`` where spectral looks for it: the header's name without
    ``.hdr``, or with one of spectral's known extensions or the interleave, lower or upper case."""
    import spectral.io.envi as spectral_envi

    extensions = ["", *(ext.lower() for ext in spectral_envi.KNOWN_EXTS), interleave.lower()]
    stem = header.with_suffix("")
    for extension in [*extensions, *(ext.upper() for ext in extensions if ext)]:
        candidate = stem.with_name(f"{stem.name}.{extension}") if extension else stem
        if candidate.is_file():
            return candidate
    raise _no_data_file(header, source)


def _no_data_file(header: Path, source: Path) -> SceneError:
    stem = header.with_suffix("").name
    return SceneError(
        f"no ENVI data file beside the header {header} under a name it is looked for by ({stem}, "
        f"{stem}.img, {stem}.dat, {stem}.raw, ... or {stem}.<interleave>): give the data file itself",
        source,
    )


def _interleave(metadata: Mapping[str, Any], source: Path) -> str:
    """The header's interleave, case and spaces aside (spectral itself reads anything but exactly
    'bil'/'BIL'/'bip'/'BIP' as BSQ: a 'Bip' file came back scrambled)."""
    value = str(metadata.get("interleave", "bsq")).strip().lower()
    if value not in LAYOUTS:
        raise SceneError(
            f"unknown ENVI interleave {metadata.get('interleave')!r}: expected bsq, bil or bip", source
        )
    return value


def _memmap(image: Any, interleave: str, source: Path) -> np.ndarray:
    """Map the data file as a (rows, cols, bands) view after checking it holds exactly the samples
    the header describes (a larger file means a wrong data type, size or offset: its samples would
    be misread, not merely extra)."""
    rows, cols, bands = image.shape
    dtype = np.dtype(image.dtype)  # with the header's byte order
    expected = image.offset + rows * cols * bands * dtype.itemsize
    actual = Path(image.filename).stat().st_size
    if actual != expected:
        problem = "is truncated" if actual < expected else "is larger than its header describes"
        hint = (
            "" if actual < expected else " (check 'data type', 'lines', 'samples', 'bands', 'header offset')"
        )
        raise SceneError(
            f"ENVI data file {image.filename} {problem}: {actual} bytes, the header needs {expected}{hint}",
            source,
        )
    sizes = {"rows": rows, "cols": cols, "bands": bands}
    stored = LAYOUTS[interleave]
    with reading(source, "ENVI data file"):
        data = np.memmap(image.filename, dtype=dtype, mode="r", offset=image.offset,
                         shape=tuple(sizes[axis] for axis in stored))  # fmt: skip
    return data.transpose(to_rows_cols_bands(interleave))


def _header_floats(metadata: Mapping[str, Any], key: str, source: Path) -> np.ndarray | None:
    if key not in metadata:
        return None
    values = _as_list(metadata[key])
    if len(values) > 1 and not str(values[-1]).strip():  # a trailing comma: {400.0, 410.0,}
        values = values[:-1]
    try:
        return np.asarray([float(value) for value in values], dtype=np.float64)
    except ValueError as exc:
        raise SceneError(f"cannot parse the ENVI header field {key!r} as numbers ({exc})", source) from exc


def _good_bands(metadata: Mapping[str, Any], source: Path) -> np.ndarray | None:
    flags = _header_floats(metadata, "bbl", source)
    return None if flags is None else flags != 0


def _no_data_value(metadata: Mapping[str, Any], source: Path) -> float | None:
    values = _header_floats(metadata, "data ignore value", source)
    if values is None:
        return None
    if values.size != 1:
        raise SceneError(f"'data ignore value' must be one number, got {values.size}", source)
    return float(values[0])


def _single(value: Any) -> Any:
    """A header field written in braces with one value (``{Nanometers}``) as that value."""
    return value[0] if isinstance(value, (list, tuple)) and len(value) == 1 else value


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]
