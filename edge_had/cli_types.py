"""argparse types that refuse numbers out of range, and artifact files that do not exist, when
the command line is read: a usage error naming the option, never a silent default, a NaN
threshold, a fallback to another backend or a late traceback."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def _parsed(text: str, kind: type[int] | type[float]) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not {'an integer' if kind is int else 'a number'}"
        ) from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def integer_from(low: int) -> Callable[[str], int]:
    """An integer >= ``low``."""

    def parse(text: str) -> int:
        value = int(_parsed(text, int))
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}")
        return value

    return parse


def positive_number(text: str) -> float:
    """A finite number > 0."""
    value = _parsed(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value:g} is not above 0")
    return value


def non_negative_number(text: str) -> float:
    """A finite number >= 0."""
    value = _parsed(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value:g} is below 0")
    return value


def probability(text: str) -> float:
    """A number in [0, 1]."""
    value = _parsed(text, float)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{value:g} is not in [0, 1]")
    return value


def open_probability(text: str) -> float:
    """A number strictly between 0 and 1 (a false-alarm rate: 0 and 1 give no threshold)."""
    value = _parsed(text, float)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{value:g} is not strictly between 0 and 1")
    return value


def compute_device(text: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N``: the devices the networks run on (``gpu`` or ``mps`` ran
    into a torch traceback, or onnxruntime on the CPU in silence)."""
    device = text.strip().lower()
    if device in ("cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit()):
        return device
    raise argparse.ArgumentTypeError(f"{text!r}: choose cpu, cuda or cuda:N (N: the GPU's index)")


def existing_file(text: str) -> str:
    """A path to a file that exists (an artifact given by name must be used, not skipped)."""
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"{text!r}: no such file")
    return text


#: Options that only the enhancement network reads, with their defaults (a command without one
#: of them counts as at its default).
NETWORK_OPTIONS = {
    "model": None,
    "onnx": None,
    "engine": None,
    "backend": "auto",
    "net_precision": None,  # fp32, or what an --onnx / --engine records
    "device": "cpu",
    "fusion": "feature",
    "async_enhance": False,
}


def changed_options(args: argparse.Namespace, defaults: Mapping[str, Any]) -> list[str]:
    """The options of ``defaults`` (destination -> default) that ``args`` sets to another value, as
    flags (``alpha_spe`` -> ``--alpha-spe``): what a command refuses where they would be ignored."""
    return [
        "--" + name.replace("_", "-")
        for name, default in defaults.items()
        if getattr(args, name, default) != default
    ]


def network_options_given(args: argparse.Namespace) -> list[str]:
    """The network-only options (:data:`NETWORK_OPTIONS`) set away from their defaults, as flags:
    for a detector without a network they would be ignored silently."""
    return changed_options(args, NETWORK_OPTIONS)


def refuse_network_options(args: argparse.Namespace, detector: str, enhanced: bool) -> None:
    """ValueError naming the network-only options set for ``detector`` when it runs no network
    (``enhanced`` False): ``detect``, ``stream`` and :func:`edge_had.stream.onboard.build_pipeline`
    refuse them alike."""
    given = network_options_given(args)
    if not enhanced and given:
        raise ValueError(f"{' '.join(given)}: only enhanced-* detectors use them; {detector} runs no network")


def check_output_file(path: str | Path, option: str, suffix: str | None = None) -> None:
    """Refuse an output file that cannot be written, before the run that makes it: a folder, a
    parent that is a file, or a name without ``suffix`` (the file's format: a ``.jpg`` name
    would hold PNG bytes). A parent folder that does not exist yet is made when writing."""
    from edge_had.errors import EdgeHadError

    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise EdgeHadError(f"{option} {path}: is a folder, not a file")
    if folder.exists() and not folder.is_dir():
        raise EdgeHadError(f"{option} {path}: {folder} is not a folder")
    if suffix is not None and path.suffix.lower() != suffix:
        raise EdgeHadError(f"{option} {path}: the file is written as {suffix[1:].upper()}; name it {suffix}")


def add_resample_option(parser: Any, users: str = "") -> None:
    """``--resample`` (:data:`edge_had.band_resampling.RESAMPLE_CHOICES`) for detect, eval and
    stream; ``users`` prefixes the help with the detectors that take it."""
    from edge_had.band_resampling import RESAMPLE_CHOICES

    parser.add_argument(
        "--resample",
        choices=RESAMPLE_CHOICES,
        default=RESAMPLE_CHOICES[0],
        help=f"{users}how the sensor's bands are resampled: on the file's wavelengths (default; on "
        "band index when the file records none) or on band index whatever the file records (band "
        "centres known to be wrong, or a sensor outside 400-2500 nm)",
    )


def add_reduction_kernel_option(parser: Any) -> None:
    """``--reduction-kernel`` for ``stream`` and ``plan``: the plain detectors' 32-band reduction."""
    from edge_had.band_resampling import KERNELS  # (numpy only: no reader, no torch)

    parser.add_argument(
        "--reduction-kernel",
        choices=KERNELS,
        default="linear",
        help="rx, hybrid-rx: how more than 32 bands are reduced to 32 - linear (default: "
        "interpolation, 2 sensor bands per reduced band) or triangle (band-averaging over the "
        "bands each reduced band spans: less noise on many noisy bands)",
    )


#: the interleaves the readers know (:data:`edge_had.io.raw.LAYOUTS`; not imported here: reading
#: the command line imports no file reader)
INTERLEAVES = ("bip", "bil", "bsq")


def add_interleave_option(parser: Any) -> None:
    """``--interleave``: how the cube of a MATLAB, HDF5 or ``.npy`` file is stored
    (:data:`edge_had.io.raw.LAYOUTS`), for every command that reads scene files (detect, eval,
    stream, train, release, crossval, export, calibrate): it goes to ``load_scene(...,
    interleave=)`` of each, and what the command writes records it."""
    parser.add_argument(
        "--interleave",
        choices=INTERLEAVES,
        help="how the cube of each .mat, .h5 or .npy scene file is stored: bip = rows x cols x bands "
        "(the default), bil = rows x bands x cols, bsq = bands x rows x cols. ENVI headers say their "
        "own: an ENVI file given it is an error (eval skips it, saying so)",
    )


def finite_number(text: str) -> float:
    """A finite number."""
    return _parsed(text, float)


def add_saturation_option(parser: Any) -> None:
    """``--saturation``: the sensor's saturation level (detect and stream); none by default."""
    parser.add_argument(
        "--saturation",
        type=finite_number,
        metavar="VALUE",
        help="the sensor's saturation level in the file's units (e.g. 4095 for a 12-bit camera): a "
        "pixel with any good band at or above it is masked like a no-data pixel - not scored (NaN), "
        "kept out of the statistics, counted. Default: none (no standard ENVI header field holds it)",
    )
