"""Sensor presets: pixels per line, bands and line rate; the line budget is 1 / line rate.

Defaults a user overrides with ``--line-rate``, ``--width``, ``--bands`` (with a file source a
preset sets only the line rate): set them from your camera's configuration - binning changes the
band count, the exposure the line rate. Checked against published figures (2026-11-30, a review):

* HySpex Mjolnir V-1240: 1240 pixels and 400 bands (hyspex.com, "key quality parameters": "The
  V-1240 has 1240 spatial pixels and 400 bands"; the preset had 200, a binned mode's count);
* Resonon Pika L: 900 pixels, 281 bands as Resonon lists them (its files hold 300 by default:
  2x binning);
* Specim FX10: 224 bands is the default 2x binned readout (448 rows unbinned; Specim's manual);
* EnMAP: 1000 pixels (30 km swath at 30 m), the 224 bands its products deliver, 227 Hz from its
  4.4 ms integration time (DLR's specification; the preset had 230 Hz).

Not confirmed from a vendor source: every other line rate (FX10 330 Hz, FX17 670 Hz, Nano-Hyperspec
250 Hz - a figure published for the Nano HP -, V-1240 285 Hz, Pika L 249 Hz), the FX17's 640 pixels,
the Nano-Hyperspec's 640 pixels and 270 bands.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SensorPreset:
    name: str
    description: str
    width: int
    bands: int
    line_rate_hz: float

    @property
    def budget_s(self) -> float:
        return 1.0 / self.line_rate_hz


SENSORS = {
    preset.name: preset
    for preset in (
        SensorPreset("fx10", "Specim FX10", 1024, 224, 330.0),
        SensorPreset("fx17", "Specim FX17", 640, 224, 670.0),
        SensorPreset("nano-hyperspec", "Headwall Nano-Hyperspec", 640, 270, 250.0),
        SensorPreset("mjolnir-v1240", "HySpex Mjolnir V-1240", 1240, 400, 285.0),
        SensorPreset("pika-l", "Resonon Pika L", 900, 281, 249.0),
        SensorPreset("enmap", "EnMAP-like satellite", 1000, 224, 227.0),
    )
}


def sensor(name: str) -> SensorPreset:
    try:
        return SENSORS[name]
    except KeyError:
        raise ValueError(f"unknown sensor {name!r}; choose one of {sorted(SENSORS)}") from None
