"""The budget planner: its FLOP and byte counts against independent counts, and the roofline
arithmetic against a hand calculation."""

from __future__ import annotations

import pytest
import torch

from edge_had.models import ModelConfig
from edge_had.models.adapter import SpectralAdapter
from edge_had.models.enhancer import EnhancementModel
from edge_had.stream import plan as plan_module


def test_rx_costs_match_a_hand_count() -> None:
    update, scoring, refresh = plan_module.rx_costs(width=10, dims=4, refresh_every=2)
    assert update.flops == 2 * 10 * 4 * 4  # X^T X of a 10 x 4 line
    assert scoring.flops == 2 * (10 * 4 * 4 + 10 * 4)  # whitening product + row norms
    assert refresh.flops == pytest.approx(2 * (64 / 3 + 64) / 2)  # Cholesky + inverse, every 2nd line
    assert scoring.bytes == 4 * 10 * 4 + 4 * 10 + 4 * 16
    reduction = plan_module.reduction_cost(width=10, bands=20, dims=4)
    assert reduction.flops == 2 * 10 * 20 * 4
    # as the pipeline applies it: a gather of 2 sensor bands per reduced band (it was counted as
    # the dense product, 112x the work at 1024 x 224 -> 32)
    assert plan_module.reduction_taps(224, 32) == 2
    assert plan_module.reduction_cost(width=10, bands=20, dims=4, taps=2).flops == 2 * 10 * 4 * 2
    planned = plan_module.plan("agx-orin-64gb", "fx10", "rx")
    reduction_part = next(part for part in planned["parts"] if part["name"] == "band reduction")
    assert reduction_part["flops"] == 2 * 1024 * 32 * 2


def independent_conv_macs_per_pixel(module: torch.nn.Module) -> float:
    """Sum over the convolutions of out x in/groups x kernel area (no FlopCounter involved)."""
    total = 0.0
    for layer in module.modules():
        if isinstance(layer, torch.nn.Conv2d):
            kh, kw = layer.kernel_size
            total += layer.out_channels * layer.in_channels / layer.groups * kh * kw
    return total


def test_enhancement_flops_agree_with_an_independent_count_of_the_layers() -> None:
    torch.manual_seed(0)
    config = ModelConfig()
    spectral, spatial = config.build_networks()
    model = EnhancementModel(SpectralAdapter.from_band_count(224, 64), spectral, spatial).eval()
    cost = plan_module.enhancement_cost(model, 224, 1024, precision="fp16")
    adapter = 2 * 64 * (16 + 3 + 3) / 16  # 2 sensor bands per canonical band, on the window
    spectral_as_run = independent_conv_macs_per_pixel(spectral) * (16 + 3 + 3) / 16
    floor = 2 * 1024 * (adapter + spectral_as_run)
    # the planner adds the amortised spatial student, bias adds, residuals and the fusion on top
    assert floor < cost.flops < floor * 1.6
    # bytes on the 22-line window as well (they were counted per new line only): the line in,
    # the K-band line out, every conv layer's FP16 output written and read, the weights per block
    window = (16 + 3 + 3) / 16
    channels = sum(m.out_channels for m in spectral.modules() if isinstance(m, torch.nn.Conv2d))
    weights = sum(t.numel() for t in (*model.parameters(), *model.buffers()))
    expected = 4 * 1024 * 224 * window + 4 * 1024 * 64 + 2 * 2 * channels * 1024 * window + 2 * weights / 16
    assert cost.bytes == pytest.approx(expected, rel=1e-12)
    # FP32 networks (the default: what the shipped model deploys at) move 4 bytes per value
    fp32 = plan_module.enhancement_cost(model, 224, 1024)
    expected_fp32 = (
        4 * 1024 * 224 * window + 4 * 1024 * 64 + 4 * 2 * channels * 1024 * window + 4 * weights / 16
    )
    assert fp32.bytes == pytest.approx(expected_fp32, rel=1e-12) and fp32.precision == "fp32"
    assert fp32.flops == cost.flops


def test_roofline_bound_is_the_slower_of_compute_and_memory(monkeypatch) -> None:
    from edge_had.stream.boards import BoardMode

    board = BoardMode("test", "max", 8, 1024, 1000, 5.0, None, "none", 100.0, 6, "unit test", "")
    monkeypatch.setattr("edge_had.stream.boards.max_mode", lambda name: board)
    result = plan_module.plan("test", "fx10", "rx", reduced_bands=32)
    for row in result["parts"]:
        assert row["bound_s"] == pytest.approx(max(row["flops"] / 5.0e12, row["bytes"] / 100.0e9))
    assert result["lower_bound_s"] == pytest.approx(sum(row["bound_s"] for row in result["parts"]))
    assert result["budget_fraction"] == pytest.approx(result["lower_bound_s"] * 330.0)
    assert result["flops_per_line"] == pytest.approx(sum(row["flops"] for row in result["parts"]))
    enhanced = plan_module.plan(
        "test", "fx10", "enhanced-rx", net_precision="fp16"
    )  # no FP16 peak: memory only
    assert enhanced["parts"][0]["compute_s"] is None
    assert enhanced["parts"][0]["bound_s"] == pytest.approx(enhanced["parts"][0]["bytes"] / 100.0e9)
    at_fp32 = plan_module.plan("test", "fx10", "enhanced-rx")["parts"][0]  # the FP32 peak bounds it
    assert at_fp32["compute_s"] == pytest.approx(at_fp32["flops"] / 5.0e12)


def test_every_board_has_a_sourced_maximum_mode() -> None:
    from edge_had.stream.boards import BOARDS, max_mode

    assert set(BOARDS) == {"orin-nano-8gb", "orin-nx-16gb", "agx-orin-64gb", "thor"}
    for name in BOARDS:
        mode = max_mode(name)
        assert mode.fp32_tflops and mode.bandwidth_gbs and mode.source


def test_local_rx_costs_match_a_hand_count() -> None:
    new_line, sums, solve, basis = plan_module.local_rx_costs(
        width=10, dims=4, components=2, outer=5, basis_every=8
    )
    features = 1 + 2 + 3  # [valid, y1, y2, y1 y1, y1 y2, y2 y2] per pixel
    # projection 4 -> 2, 3 products, a cumulative sum and 2 differences of the 6 features
    assert new_line.flops == 10 * (2 * 4 * 2 + 3 + 3 * features)
    assert new_line.bytes == 4 * 10 * 4 + 4 * 10 * (2 + 2 * features)  # line in; y, 2 box sums out
    assert sums.flops == 10 * features * 5  # 2 windows x (add, remove) + their difference
    assert (
        sums.bytes == 4 * 2 * 4 * 10 * features
    )  # FP32; per window: total read + written, line in, line out
    # mean 2, covariance 3 x 3 pairs; elimination of the 3 x 3 bordered matrix: pivot 1 updates
    # 2 x 2 entries (2 flops each) after 2 divisions, pivot 2 updates 1 entry after 1 division
    assert solve.flops == pytest.approx(10 * (2 + 9 + (2 * 4 + 2) + (2 * 1 + 1)))
    assert basis.flops == pytest.approx((9 * 64 + 5 * new_line.flops) / 8)


def test_hybrid_plans_add_local_rx_and_drop_the_spatial_student(monkeypatch) -> None:
    from edge_had.stream.boards import BoardMode

    board = BoardMode("test", "max", 8, 1024, 1000, 5.0, None, "none", 100.0, 6, "unit test", "")
    monkeypatch.setattr("edge_had.stream.boards.max_mode", lambda name: board)
    plain, hybrid = (plan_module.plan("test", "fx10", name) for name in ("rx", "hybrid-rx"))
    assert [row["name"] for row in hybrid["parts"]][:4] == [row["name"] for row in plain["parts"]]
    assert len(hybrid["parts"]) == 8 and "FP64 local-RX kernels" in hybrid["caveat"]
    enhanced, enhanced_hybrid = (
        plan_module.plan("test", "fx10", n) for n in ("enhanced-rx", "enhanced-hybrid-rx")
    )
    # the shipped model's hybrid alphas have alpha_spa = 0: the student is not run
    assert enhanced_hybrid["parts"][0]["flops"] < enhanced["parts"][0]["flops"]
    with pytest.raises(ValueError, match="unknown detector"):
        plan_module.plan("test", "fx10", "lrx")


def test_plan_refuses_what_stream_refuses_and_writes_its_json_into_a_new_folder(tmp_path, capsys) -> None:
    """--model with a plain detector was accepted (stream refuses it), and --json into a folder
    that did not exist failed after the table was printed (a review)."""
    import json

    from edge_had.cli import main

    assert main(["plan", "--device", "agx-orin-64gb", "--detector", "rx", "--model", "x"]) == 2
    assert "--model: only enhanced-* detectors" in capsys.readouterr().err
    target = tmp_path / "new" / "plan.json"
    assert main(["plan", "--device", "agx-orin-64gb", "--detector", "rx", "--json", str(target)]) == 0
    assert json.loads(target.read_text())["detector"]


def test_plan_takes_a_power_mode_and_the_sensor_figures_a_deployment_changes() -> None:
    """A binned FX10 at another frame rate on a lower power mode could not be planned (a review):
    the preset's width, bands and line rate and the board's fastest mode were fixed."""
    from edge_had.stream.boards import board_modes, max_mode

    modes = board_modes("orin-nano-8gb")
    slower = next(mode for mode in modes if mode != max_mode("orin-nano-8gb"))
    base = plan_module.plan("orin-nano-8gb", "fx10", "rx")
    custom = plan_module.plan(
        "orin-nano-8gb",
        "fx10",
        "rx",
        power_mode=slower.mode.upper(),
        width=512,
        bands=100,
        line_rate_hz=100.0,
    )
    assert custom["board"]["mode"] == slower.mode and base["board"]["mode"] != slower.mode
    assert custom["sensor"] | {"preset": "fx10"} == {
        "preset": "fx10", "width": 512, "bands": 100, "line_rate_hz": 100.0, "budget_s": 0.01
    }  # fmt: skip
    update = next(row for row in custom["parts"] if row["name"] == "statistics update")
    assert update["flops"] == 2 * 512 * 32 * 32  # X^T X of a 512 x 32 line (100 bands -> 32)
    assert custom["budget_fraction"] == pytest.approx(custom["lower_bound_s"] * 100.0)
    assert "host side is not counted" in custom["caveat"]
    with pytest.raises(ValueError, match="no power mode 'turbo'; its sourced modes: " + modes[0].mode):
        plan_module.plan("orin-nano-8gb", "fx10", "rx", power_mode="turbo")
    with pytest.raises(ValueError, match="need width >= 1"):
        plan_module.plan("orin-nano-8gb", "fx10", "rx", line_rate_hz=0.0)


def test_plan_says_a_peak_nvidia_does_not_publish(capsys) -> None:
    """Orin modules have no published FP16 TFLOP/s: the header printed 'None' (a review)."""
    from edge_had.cli import main

    assert main(["plan", "--device", "orin-nano-8gb", "--detector", "rx"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "FP16/FP32 not published/" in header and "None" not in header
