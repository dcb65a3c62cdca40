"""A synthetic satellite-payload scene (EnMAP/PRISMA-like) for the many-band measurements.

240 bands in file order: VNIR 420-1000 nm (96) then SWIR 900-2450 nm (144), so the band centres
overlap and are not monotonic; the deep water-vapour bands are zero (26); four smooth endmember
abundance fields, a brightness field, 25 sub-pixel targets of 1-6 % abundance (a painted-panel
spectrum) on 1-2 px squares, Gaussian noise of 0.003 reflectance. Written as ENVI int16 x 10000
(``reflectance scale factor`` 10000) in BIL, with its ground truth beside it (``NAME_gt.npy``,
which detect, eval and stream take). Not one of the ten scenes: a sensor the model never saw.

    python bench/payload_scene.py --lines 200 --pixels 400 --out out/payload
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

VNIR = np.linspace(420.0, 1000.0, 96)
SWIR = np.linspace(900.0, 2450.0, 144)


def band_centres() -> np.ndarray:
    return np.concatenate([VNIR, SWIR])


def water_bands(wavelengths: np.ndarray) -> np.ndarray:
    return ((wavelengths > 1340) & (wavelengths < 1460)) | ((wavelengths > 1790) & (wavelengths < 1960))


def payload_scene(lines: int, pixels: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cube (lines, pixels, 240) float32 reflectance, ground truth (lines, pixels) bool, centres nm)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    wl = band_centres()
    vegetation = (
        0.05
        + 0.4 / (1 + np.exp(-(wl - 715) / 12))
        - 0.15 * np.exp(-(((wl - 1450) / 80) ** 2))
        - 0.2 * np.exp(-(((wl - 1940) / 120) ** 2)) * (wl > 1500)
        + 0.05 * np.exp(-(((wl - 550) / 30) ** 2))
    )
    soil = 0.1 + 0.25 * (wl - 400) / 2050 + 0.03 * np.sin(wl / 150)
    water = 0.06 * np.exp(-(wl - 420) / 150) + 0.005
    concrete = 0.25 + 0.05 * np.cos(wl / 300)
    endmembers = np.stack([vegetation, soil, water, concrete])
    abundances = np.stack([gaussian_filter(rng.standard_normal((lines, pixels)), 12) for _ in range(4)], -1)
    abundances = np.exp(abundances * 20)
    abundances /= abundances.sum(-1, keepdims=True)
    cube = abundances @ endmembers
    brightness = 0.9 + 0.2 * gaussian_filter(rng.standard_normal((lines, pixels)), 30)[..., None] * 5
    cube *= brightness.clip(0.7, 1.3)
    gt = np.zeros((lines, pixels), bool)
    panel = 0.2 + 0.3 * np.exp(-(((wl - 1200) / 100) ** 2)) + 0.1 * np.exp(-(((wl - 2200) / 60) ** 2))
    for _ in range(25):
        row, col = rng.integers(5, lines - 5), rng.integers(5, pixels - 5)
        size, fraction = rng.integers(1, 3), rng.uniform(0.01, 0.06)
        cube[row : row + size, col : col + size] = (1 - fraction) * cube[
            row : row + size, col : col + size
        ] + fraction * panel
        gt[row : row + size, col : col + size] = True
    cube += rng.normal(0, 0.003, cube.shape)
    cube[..., water_bands(wl)] = 0.0
    return cube.astype(np.float32), gt, wl


def write_payload(out: Path, lines: int, pixels: int, seed: int = 0) -> Path:
    """Write ``payload.hdr``/``.img`` (int16 x 10000, BIL) and ``payload_gt.npy`` into ``out``."""
    from spectral.io import envi

    cube, gt, wl = payload_scene(lines, pixels, seed)
    out.mkdir(parents=True, exist_ok=True)
    metadata = {
        "wavelength units": "Nanometers",
        "wavelength": [f"{w:.2f}" for w in wl],
        "fwhm": ["6.5"] * VNIR.size + ["10.0"] * SWIR.size,
        "reflectance scale factor": 10000,
    }
    header = out / "payload.hdr"
    counts = np.round(cube * 10000).astype(np.int16)
    envi.save_image(str(header), counts, dtype=np.int16, interleave="bil", metadata=metadata, force=True)
    np.save(out / "payload_gt.npy", gt)
    return header


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200)
    parser.add_argument("--pixels", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("out/payload"))
    args = parser.parse_args()
    header = write_payload(args.out, args.lines, args.pixels, args.seed)
    print(header)


if __name__ == "__main__":
    main()
