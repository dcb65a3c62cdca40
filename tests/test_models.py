"""edge_had.models: shapes, invariants, the spectral adapter, ONNX export and the MAC budget."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edge_had.models import (
    BUDGET_MACS_PER_PIXEL,
    EnhancementModel,
    SpatialStudent,
    SpectralAdapter,
    SpectralEnhancer,
    adaptive_mean_pool,
    build_model,
    count_macs_per_pixel,
)
from edge_had.models.adapter import canonical_wavelengths
from edge_had.models.normalize import Normalization

K = 64
LINES = 9
WIDTHS = (100, 150, 1024)


def _model(bands: int = 188, *, alpha_spe: float = 1.5, alpha_spa: float = 0.5) -> EnhancementModel:
    torch.manual_seed(0)
    return build_model(bands, alpha_spe=alpha_spe, alpha_spa=alpha_spa).eval()


def _cube(bands: int, lines: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.1 * (2 * torch.rand(1, bands, lines, width, generator=generator) - 1)


# --------------------------------------------------------------------------- shapes, invariants


@pytest.mark.parametrize(("lines", "width"), [(LINES, w) for w in WIDTHS] + [(5, 37), (1, 1), (17, 33)])
def test_shapes_and_nonnegative_features(lines: int, width: int) -> None:
    model = _model()
    with torch.no_grad():
        out = model(_cube(188, lines, width))
    for name, tensor in out._asdict().items():
        assert tensor.shape == (1, K, lines, width), name
        assert torch.isfinite(tensor).all(), name
    assert (out.f_spe >= 0).all() and (out.f_spa >= 0).all()
    assert out.f_spe.amax() > 0 and out.f_spa.amax() > 0
    torch.testing.assert_close(out.enhanced, out.x_k + 1.5 * out.f_spe + 0.5 * out.f_spa)


def test_batch_and_alphas_are_recorded() -> None:
    model = _model(alpha_spe=3.0, alpha_spa=0.25)
    assert model.alphas == {"alpha_spe": 3.0, "alpha_spa": 0.25}
    state = model.state_dict()
    assert float(state["alpha_spe"]) == 3.0 and float(state["alpha_spa"]) == 0.25
    cube = torch.cat([_cube(188, 6, 20, seed=1), _cube(188, 6, 20, seed=2)])
    with torch.no_grad():
        batched = model(cube).enhanced
        single = model(cube[1:]).enhanced
    torch.testing.assert_close(batched[1:], single)


def test_spectral_only_model_has_zero_spatial_field() -> None:
    adapter = SpectralAdapter.from_band_count(120, K)
    model = EnhancementModel(adapter, SpectralEnhancer(K), None, alpha_spe=2.0).eval()
    with torch.no_grad():
        out = model(_cube(120, 4, 11))
    assert torch.count_nonzero(out.f_spa) == 0
    torch.testing.assert_close(out.enhanced, out.x_k + 2.0 * out.f_spe)


def test_mismatched_k_rejected() -> None:
    with pytest.raises(ValueError, match="disagree"):
        EnhancementModel(SpectralAdapter.from_band_count(100, 32), SpectralEnhancer(64), SpatialStudent(64))


def test_spectral_window_clipped_at_scene_edges_matches_whole_scene() -> None:
    """One output line needs only receptive_radius lines of context on each side (streaming)."""
    torch.manual_seed(0)
    net = SpectralEnhancer(K).eval()
    x = torch.randn(1, K, 20, 31)
    r = net.receptive_radius
    assert r == 3
    with torch.no_grad():
        whole = net(x)
        for line in (0, 2, 10, 19):
            lo, hi = max(0, line - r), min(20, line + r + 1)
            window = net(x[:, :, lo:hi])
            torch.testing.assert_close(window[:, :, line - lo], whole[:, :, line], rtol=1e-5, atol=1e-6)


def test_spatial_field_is_low_frequency() -> None:
    torch.manual_seed(0)
    net = SpatialStudent(K).eval()
    x = torch.randn(1, K, 64, 256)
    with torch.no_grad():
        f = net(x)
    rough = (f[..., 1:] - f[..., :-1]).abs().mean() / f.abs().mean().clamp_min(1e-12)
    raw = (x[..., 1:] - x[..., :-1]).abs().mean() / x.abs().mean()
    assert rough < 0.05 * raw


@pytest.mark.parametrize(("height", "width"), [(1, 1), (3, 7), (5, 64), (13, 9)])
@pytest.mark.parametrize("bins", [1, 2, 4])
def test_adaptive_mean_pool_matches_torch(height: int, width: int, bins: int) -> None:
    x = torch.randn(2, 3, height, width)
    torch.testing.assert_close(adaptive_mean_pool(x, bins), F.adaptive_avg_pool2d(x, bins))


def test_import_edge_had_does_not_import_torch() -> None:
    code = "import sys, edge_had; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- spectral adapter


@pytest.mark.parametrize("bands", [100, 188, 207, 450])
def test_adapter_any_band_count_gives_k_channels(bands: int) -> None:
    wavelengths = np.linspace(380.0, 2510.0, bands)
    for adapter in (
        SpectralAdapter.from_band_count(bands, K),
        SpectralAdapter.from_wavelengths(wavelengths, K),
    ):
        assert adapter.matrix.shape == (K, bands)
        np.testing.assert_allclose(adapter.matrix.sum(axis=1), 1.0, atol=1e-12)
        assert (adapter.matrix >= 0).all()
        assert adapter(_cube(bands, 3, 10)).shape == (1, K, 3, 10)


def _jittered_wavelengths(bands: int, lo: float, hi: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    step = (hi - lo) / (bands - 1)
    return np.linspace(lo, hi, bands) + rng.uniform(-0.3, 0.3, bands) * step


@pytest.mark.parametrize("kernel", ["linear", "triangle"])
@pytest.mark.parametrize("bands", [100, 224, 450])
def test_adapter_reproduces_linear_spectrum_at_interior_wavelengths(bands: int, kernel: str) -> None:
    wl = _jittered_wavelengths(bands, 420.0, 2450.0)  # narrower than the canonical 400-2500
    adapter = SpectralAdapter.from_wavelengths(wl, K, kernel=kernel)  # type: ignore[arg-type]
    canonical = adapter.canonical
    assert canonical is not None
    spectrum = 0.3 + 1e-3 * wl
    resampled = adapter.matrix @ spectrum
    inside = (canonical >= wl.min()) & (canonical <= wl.max())
    assert inside.sum() >= K - 4 and not inside.all()
    np.testing.assert_allclose(resampled[inside], 0.3 + 1e-3 * canonical[inside], rtol=1e-12)
    # outside the sensor's range the nearest band is taken (clamp)
    first, last = spectrum[np.argmin(wl)], spectrum[np.argmax(wl)]
    np.testing.assert_allclose(resampled[canonical < wl.min()], first, rtol=1e-12)
    np.testing.assert_allclose(resampled[canonical > wl.max()], last, rtol=1e-12)
    # the module (a float32 1x1 conv) agrees to float32 precision
    cube = torch.from_numpy(np.broadcast_to(spectrum[None, :, None, None], (1, bands, 2, 3)).copy())
    out32 = adapter(cube.float())[0, :, 1, 2].numpy()
    np.testing.assert_allclose(out32[inside], 0.3 + 1e-3 * canonical[inside], rtol=2e-6)


@pytest.mark.parametrize("kernel", ["linear", "triangle"])
@pytest.mark.parametrize(("bands", "k"), [(100, 64), (450, 64), (188, 32), (40, 64)])
def test_band_index_mode_preserves_constant_and_linear_in_index(bands: int, k: int, kernel: str) -> None:
    adapter = SpectralAdapter.from_band_count(bands, k, kernel=kernel)  # type: ignore[arg-type]
    cube = torch.full((1, bands, 2, 5), 0.37)
    torch.testing.assert_close(adapter(cube), torch.full((1, k, 2, 5), 0.37))
    ramp = np.arange(bands) / (bands - 1)
    np.testing.assert_allclose(adapter.matrix @ ramp, np.linspace(0, 1, k), atol=1e-12)


def test_adapter_order_duplicates_and_invalid_bands() -> None:
    wl = np.linspace(400.0, 2500.0, 120)
    perm = np.random.default_rng(1).permutation(120)
    sorted_adapter = SpectralAdapter.from_wavelengths(wl, K)
    shuffled = SpectralAdapter.from_wavelengths(wl[perm], K)
    np.testing.assert_allclose(shuffled.matrix, sorted_adapter.matrix[:, perm], atol=1e-12)
    # invalid (e.g. water-absorption) bands get no weight and are interpolated across
    valid = np.ones(120, dtype=bool)
    valid[50:60] = False
    masked = SpectralAdapter.from_wavelengths(wl, K, valid=valid)
    assert np.all(masked.matrix[:, ~valid] == 0)
    np.testing.assert_allclose(masked.matrix @ wl, np.linspace(400, 2500, K), rtol=1e-12)
    # bands at the same wavelength are averaged
    dup = SpectralAdapter.from_wavelengths(np.r_[wl, wl[10]], K)
    spectrum = np.r_[np.sin(wl / 300.0), np.sin(wl[10] / 300.0)]
    np.testing.assert_allclose(dup.matrix @ spectrum, sorted_adapter.matrix @ spectrum[:120], atol=1e-12)


def test_adapter_for_a_sensor_outside_the_canonical_range_is_an_error() -> None:
    # a VNIR-only sensor keeps the default grid: canonical bands past its range copy its last band
    vnir = SpectralAdapter.from_wavelengths(np.linspace(400.0, 1000.0, 224), K)
    assert vnir.canonical is not None
    inside = vnir.canonical <= 1000.0
    assert 0 < inside.sum() < K
    assert np.all(vnir.matrix[~inside, -1] == 1.0)
    # thermal infrared holds no canonical wavelength: every canonical band would be one band
    with pytest.raises(
        ValueError, match=r"163 of the sensor's 300 bands lie outside the model's 400-2500 nm"
    ):
        SpectralAdapter.from_wavelengths(np.linspace(400.0, 5000.0, 300), K)  # its targets beyond 2500: lost
    assert (
        SpectralAdapter.from_wavelengths(np.linspace(350.0, 2600.0, 224), K).k == K
    )  # a few bands out: fine
    with pytest.raises(ValueError, match=r"span 8000-12000 nm, which holds none of the"):
        SpectralAdapter.from_wavelengths(np.linspace(8000.0, 12000.0, 100), K)
    # bands between two canonical wavelengths, or whose valid bands are, likewise
    between = np.linspace(400.0, 2500.0, K)[10] + np.array([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="holds none"):
        SpectralAdapter.from_wavelengths(between, K)
    wl = np.r_[np.linspace(8000.0, 9000.0, 10), np.linspace(400.0, 2500.0, 10)]
    with pytest.raises(ValueError, match="holds none"):
        SpectralAdapter.from_wavelengths(wl, K, valid=np.arange(20) < 10)
    # ... unless lo/hi are set inside the sensor's range
    thermal = np.linspace(8000.0, 12000.0, 100)
    assert SpectralAdapter.from_wavelengths(thermal, K, lo=8000.0, hi=12000.0).k == K


@pytest.mark.parametrize(
    "wavelengths",
    [np.linspace(400.0, 2500.0, 40), _jittered_wavelengths(224, 400.0, 2500.0, seed=3)],
    ids=["sparser-than-canonical", "denser-than-canonical"],
)
def test_triangle_rows_are_the_documented_weighted_linear_fit(wavelengths: np.ndarray) -> None:
    """Each interior canonical band of the triangle kernel is a straight line fitted by weighted
    least squares (np.polyfit) to the sensor's bands, the weights a triangle of half-width
    max(canonical spacing, 1.5 x the bracketing sensor gap) (the adapter's docstring): on a
    curved spectrum, where any window reproduces a linear one. 40 bands: the gap sets the width;
    224: the canonical spacing does."""
    from edge_had.band_resampling import wavelength_matrix

    matrix, canonical = wavelength_matrix(wavelengths, K, kernel="triangle")
    spectrum = np.sin(wavelengths / 150.0) + 1e-6 * (wavelengths - 1400.0) ** 2
    spacing = 2100.0 / (K - 1)
    checked = 0
    for row, g in enumerate(canonical):
        if not wavelengths[0] < g < wavelengths[-1]:
            continue
        above = np.searchsorted(wavelengths, g, side="right")
        half = max(spacing, 1.5 * (wavelengths[above] - wavelengths[above - 1]))
        weights = np.clip(1.0 - np.abs(wavelengths - g) / half, 0.0, None)
        near = weights > 0
        slope, intercept = np.polyfit(wavelengths[near] - g, spectrum[near], 1, w=np.sqrt(weights[near]))
        assert matrix[row] @ spectrum == pytest.approx(intercept, abs=1e-9), row
        checked += 1
    assert checked >= K - 2


def test_a_quarter_of_the_bands_outside_the_range_is_the_most_accepted() -> None:
    """MAX_OUTSIDE_FRACTION: up to a quarter of the bands may lie outside 400-2500 nm; one more is
    refused (25 and 26 of 100)."""
    from edge_had.band_resampling import WavelengthRangeError, wavelength_matrix

    inside = np.linspace(400.0, 2500.0, 75)
    matrix, _ = wavelength_matrix(np.r_[inside, np.linspace(2510.0, 2750.0, 25)], K)
    assert matrix.shape == (K, 100)
    with pytest.raises(WavelengthRangeError, match="26 of the sensor's 100 bands lie outside"):
        wavelength_matrix(np.r_[inside[1:], np.linspace(2510.0, 2760.0, 26)], K)


def test_the_ignored_bands_note_names_each_side_low_then_high() -> None:
    """Bands beyond the one nearest the range on each side get no weight: 380 nm (390 nm is
    interpolated from for 400 nm) and 2520 nm (2510 nm is, for 2500 nm), named low then high."""
    from edge_had.band_resampling import ignored_bands_note

    wl = np.r_[380.0, 390.0, np.linspace(410.0, 2490.0, 60), 2510.0, 2520.0]
    note = ignored_bands_note(wl, K)
    assert note is not None
    assert note.startswith("2 of the sensor's 64 bands lie outside the model's 400-2500 nm")
    assert "get no weight (1 at 380.0 nm, 1 at 2520.0 nm)" in note
    assert ignored_bands_note(np.linspace(400.0, 2500.0, 60), K) is None


@pytest.mark.parametrize(("from_bands", "to_bands"), [(40, 57), (57, 40)])
def test_sensor_to_sensor_without_wavelengths_interpolates_linearly_on_band_index(
    from_bands: int, to_bands: int
) -> None:
    """Without band centres, the export gate's sensor-to-sensor matrix is np.interp on the
    normalised band index (a curved spectrum: any local linear fit reproduces a straight one)."""
    from edge_had.band_resampling import sensor_to_sensor_matrix

    spectrum = np.cos(np.arange(from_bands) / 3.0)
    matrix = sensor_to_sensor_matrix(from_bands, None, to_bands, np.linspace(420.0, 980.0, to_bands))
    want = np.interp(np.linspace(0.0, 1.0, to_bands), np.linspace(0.0, 1.0, from_bands), spectrum)
    np.testing.assert_allclose(matrix @ spectrum, want, atol=1e-12)


def test_adapter_for_a_sensor_chooses_wavelength_or_band_index() -> None:
    wl = np.linspace(420.0, 2450.0, 150)
    by_wavelength = SpectralAdapter.for_sensor(150, wl, K)
    assert by_wavelength.mode == "wavelength"
    np.testing.assert_array_equal(by_wavelength.matrix, SpectralAdapter.from_wavelengths(wl, K).matrix)
    by_index = SpectralAdapter.for_sensor(150, None, K)
    assert by_index.mode == "band_index"
    np.testing.assert_array_equal(by_index.matrix, SpectralAdapter.from_band_count(150, K).matrix)
    with pytest.raises(ValueError, match="149 wavelengths for 150 bands"):
        SpectralAdapter.for_sensor(150, wl[:-1], K)


def test_adapter_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="micrometres"):
        SpectralAdapter.from_wavelengths(np.linspace(0.4, 2.5, 100))
    with pytest.raises(ValueError, match="at least 2"):
        SpectralAdapter.from_band_count(1)
    with pytest.raises(ValueError, match="kernel"):
        SpectralAdapter.from_band_count(100, kernel="cubic")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- ONNX export


def _export(model: EnhancementModel, cube: torch.Tensor, path: Path) -> Path:
    names = list(model.output_names)
    axes = {0: "batch", 2: "lines", 3: "pixels"}
    torch.onnx.export(
        model,
        (cube,),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=list(model.input_names),
        output_names=names,
        dynamic_axes={name: axes for name in [*model.input_names, *names]},
    )
    return path


def _check_against_torch(model: EnhancementModel, path: Path, cube: torch.Tensor) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"cube": cube.numpy()})
    with torch.no_grad():
        want = model(cube)
    for name, a, b in zip(model.output_names, got, want, strict=True):
        b = b.numpy()
        assert a.shape == b.shape, name
        err = np.abs(a - b).max() / np.abs(b).max()
        assert err <= 1e-5, f"{name}: max|onnx - torch| / max|torch| = {err:.2e}"


@pytest.fixture(scope="module")
def onnx_model() -> EnhancementModel:
    return _model()


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")
@pytest.mark.parametrize("width", WIDTHS)
def test_onnx_export_matches_torch(onnx_model: EnhancementModel, width: int, tmp_path: Path) -> None:
    import onnx

    cube = _cube(188, LINES, width, seed=width)
    path = _export(onnx_model, cube, tmp_path / f"enhancer_w{width}.onnx")
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 188, "lines", "pixels"]
    _check_against_torch(onnx_model, path, cube)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")
def test_onnx_export_is_shape_dynamic(onnx_model: EnhancementModel, tmp_path: Path) -> None:
    path = _export(onnx_model, _cube(188, LINES, 100), tmp_path / "enhancer_w100.onnx")
    for shape in [(1, 188, LINES, 150), (2, 188, 13, 150), (1, 188, 4, 37)]:
        cube = 0.1 * torch.randn(*shape)
        _check_against_torch(onnx_model, path, cube)


# --------------------------------------------------------------------------- MAC budget


@pytest.mark.parametrize("bands", [100, 224, 450])
def test_macs_per_pixel_within_budget(bands: int) -> None:
    report = count_macs_per_pixel(build_model(bands), bands, width=1024)
    assert report["flop_counter_macs_per_pixel"] > 0
    assert report["hand_macs_per_pixel"] > 0
    assert report["total_macs_per_pixel"] <= BUDGET_MACS_PER_PIXEL and report["within_budget"]
    # the adapter gathers 2 sensor bands per canonical band: a multiply per tap and an add per tap
    # in the hand count, on the 22-line window for 16 new lines - whatever the band count
    assert report["adapter"]["total"] == pytest.approx(2 * 2 * K * 22 / 16)
    assert report["spatial"]["hand"]["upsample_bilinear2d"] > 0
    assert 0 < report["spectral_layer_cached"] < report["spectral"]["total"]
    parts = sum(report[s]["total"] for s in ("adapter", "spectral", "spatial", "fusion"))
    assert report["total_macs_per_pixel"] == pytest.approx(parts)


def test_macs_per_pixel_are_what_the_stream_runs() -> None:
    """The stages' sum equals the whole model counted on the stream's input: a 22-line window of
    raw bands every 16 new lines (a review found the earlier count assumed an adapter run once per
    line and a spatial student over a 64-line buffer, neither of which the stream had)."""
    from edge_had.models.budget import _count

    model = build_model(450)
    report = count_macs_per_pixel(model, 450, width=64)
    whole = _count(model, (torch.zeros(1, 450, 22, 64),), 16 * 64)
    assert report["total_macs_per_pixel"] == pytest.approx(whole["total"], rel=1e-9)


def test_macs_line_by_line_spectral_calls_cost_the_window() -> None:
    model = build_model(224)
    blocked = count_macs_per_pixel(model, lines_per_call=16)
    per_line = count_macs_per_pixel(model, lines_per_call=1)
    ratio = per_line["spectral"]["total"] / blocked["spectral"]["total"]
    assert ratio == pytest.approx(7 / (22 / 16), rel=1e-6)
    with pytest.raises(ValueError, match="receptive radius"):
        count_macs_per_pixel(model, context_lines=1)


def test_the_adapter_gathers_few_taps_and_convolves_wide_rows() -> None:
    """Linear rows (2 taps) are gathered; the triangle kernel's wide rows run as the 1 x 1
    convolution (gathering them built a K n-channel intermediate: 8x slower at 224 bands). Both
    equal the float64 matrix product (to the float32 rounding of the stored weights)."""
    cube = torch.randn(1, 224, 5, 9, dtype=torch.float64)
    for kernel, gathered in (("linear", True), ("triangle", False)):
        adapter = SpectralAdapter.from_band_count(224, 64, kernel=kernel).double()
        assert adapter.gather is gathered
        want = np.einsum("kb,nbhw->nkhw", adapter.matrix, cube.numpy())
        np.testing.assert_allclose(adapter(cube).numpy(), want, rtol=1e-6, atol=1e-6)


def test_one_canonical_band_is_refused():
    with pytest.raises(ValueError, match="at least 2 canonical bands"):
        canonical_wavelengths(1)


def test_an_adapter_band_mask_of_the_wrong_length_is_refused():
    with pytest.raises(ValueError, match="valid mask has 9 entries for 10 bands"):
        SpectralAdapter.from_band_count(10, 4, valid=np.ones(9, dtype=bool))


def test_normalization_is_the_documented_percentile_map_of_the_valid_pixels():
    """x_n = 0.1 * (2 (x - lo) / (hi - lo) - 1), lo/hi the 1st/99th percentiles of the valid
    pixels' values (module docstring); invalid pixels (here huge) do not move lo/hi."""
    rng = np.random.default_rng(4)
    cube = rng.uniform(0.0, 1600.0, size=(30, 30, 5))
    valid = np.ones((30, 30), dtype=bool)
    valid[:3] = False
    cube[:3] = 1e6
    lo, hi = np.percentile(cube[valid], [1.0, 99.0])
    expected = np.clip(0.1 * (2.0 * (cube - lo) / (hi - lo) - 1.0), -100.0, 100.0)
    np.testing.assert_allclose(Normalization().fit(cube, valid), (lo, hi), rtol=1e-12)
    np.testing.assert_allclose(Normalization()(cube, valid), expected, rtol=1e-5, atol=1e-6)
