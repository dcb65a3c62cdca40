"""Sensor presets: pixels per line, bands and line rate; the line budget is 1 / line rate.

Vendor datasheet figures (defaults a user can override with ``--line-rate``, ``--width``,
``--bands``). With a file source a preset sets only the line rate.
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
        SensorPreset("mjolnir-v1240", "HySpex Mjolnir V-1240", 1240, 200, 285.0),
        SensorPreset("pika-l", "Resonon Pika L", 900, 281, 249.0),
        SensorPreset("enmap", "EnMAP-like satellite", 1000, 224, 230.0),
    )
}


def sensor(name: str) -> SensorPreset:
    try:
        return SENSORS[name]
    except KeyError:
        raise ValueError(f"unknown sensor {name!r}; choose one of {sorted(SENSORS)}") from None
