"""Sourced NVIDIA Jetson board peaks for a roofline lower bound of the per-line pipeline.

What this table is for
----------------------
The streaming hyperspectral pipeline processes one sensor line at a time. To say how fast a line
*could* go on a given Jetson, we bound the time per line by a roofline:
``t_line >= max(flops / peak_flops, bytes / peak_bandwidth)``. This module holds the vendor peak
numbers that go into that bound, one entry per documented power mode.

Every number is a vendor peak (an upper bound on what the hardware can do: maximum clock, every SM
busy, the whole memory bus streaming). A roofline built from them is therefore a LOWER bound on time
per line; real kernels will be slower. Where NVIDIA does not print a number directly, the value is
derived and the ``source`` string gives the formula and where each input comes from. Where a number
could not be sourced it is ``None`` and ``note`` says so. Nothing here is measured.

Conventions
-----------
* ``fp32_tflops`` = CUDA cores x 2 (one FMA = 2 FLOP) x max GPU clock of the mode. Dense.
* ``fp16_tflops`` is dense. ``fp16_kind`` says what it is. NVIDIA publishes no FP16 figure for the
  Orin modules (only INT8 TOPS), so it is ``None`` there; for Thor NVIDIA prints FP16 only as a
  sparse tensor-core figure, so the dense value is sparse / 2 (see the Thor entry for why the
  factor of two is NVIDIA's own).
* ``sms`` = CUDA cores / 128 (128 CUDA cores per SM is printed in the AGX Orin technical brief for
  Orin; Thor's 20 SMs follow from 2560 / 128 and from 10 TPCs x 2 SMs).
* ``bandwidth_gbs`` is the theoretical peak DRAM bandwidth, shared by CPU and GPU (unified memory).

Sources
-------
[DS-NANO]  NVIDIA Jetson Orin Nano Series Data Sheet, DS-11105-001 (v1.1), p.1 "Ampere GPU" /
           "AI Performance", p.7 "Memory". Mirror read: https://connecttech.com/ftp/pdf/
           nvidia_jetson_orin_datasheet.pdf
[DS-NX]    NVIDIA Jetson Orin NX Series Data Sheet, DS-10712-001 (v1.0), p.1 "Ampere GPU" /
           "AI Performance", p.9 "Memory". Mirror read:
           https://files.waveshare.com/wiki/common/Jetson_Orin_NX_DS-10712-001_v1.0.pdf
[DS-AGX]   NVIDIA Jetson AGX Orin Series Modules Data Sheet, DS-10662-001 v1.8, p.7 "Ampere GPU"
           (JAO 64GB row), p.12 "Memory Subsystem". Mirror read:
           https://static.generation-robots.com/media/Jetson-AGX-Orin-Data-Sheet.pdf
[TB-AGX]   NVIDIA Jetson AGX Orin Series Technical Brief (v1.2), GPU section: 2 GPCs, 16 SMs,
           128 CUDA cores per SM, 2048 CUDA cores "5.3 FP32 TFLOPs", 170 sparse INT8 TOPS; 12-core
           CPU. https://www.nvidia.com/content/dam/en-zz/Solutions/gtcf21/jetson-orin/
           nvidia-jetson-agx-orin-technical-brief.pdf
[MODULES]  NVIDIA Jetson modules technical specifications, https://developer.nvidia.com/embedded/
           jetson-modules (GPU max frequency, CPU cores, memory bandwidth per module).
[SUPER]    NVIDIA developer blog, "NVIDIA JetPack 6.2 Brings Super Mode to NVIDIA Jetson Orin Nano
           and Jetson Orin NX Modules", https://developer.nvidia.com/blog/
           nvidia-jetpack-6-2-brings-super-mode-to-nvidia-jetson-orin-nano-and-jetson-orin-nx-modules/
           (MAXN_SUPER: Orin Nano GPU up to 1020 MHz, Orin NX 16GB GPU up to 1173 MHz, 40 W).
[NANO-UG]  Jetson Orin Nano Developer Kit User Guide, Introduction / Key Highlights table
           ("Memory bandwidth: Up to 102 GB/s with the latest software stack"; 67 INT8 TOPS).
           https://docs.nvidia.com/jetson/orin-nano-devkit/user-guide/latest/index.html
[L4T-PM]   Jetson Linux Developer Guide r36.4.x, Platform Power and Performance, "Jetson Orin Nano
           Series, Jetson Orin NX Series and Jetson AGX Orin Series" (nvpmodel power-mode tables,
           mode names/IDs). https://docs.nvidia.com/jetson/archives/r36.4.4/DeveloperGuide/SD/
           PlatformPowerAndPerformance/JetsonOrinNanoSeriesJetsonOrinNxSeriesAndJetsonAgxOrinSeries.html
[THOR]     NVIDIA developer blog, "Introducing NVIDIA Jetson Thor, the Ultimate Platform for Physical
           AI", specifications table (Jetson T5000): 2560-core Blackwell GPU with 96 fifth-generation
           Tensor Cores, GPU max frequency 1.57 GHz, 2070 FP4 TFLOPS sparse / 1035 dense, FP8 1035
           sparse / 517 dense, FP16 517 TFLOPS sparse, 14-core Arm Neoverse-V3AE CPU,
           128 GB LPDDR5X 273 GB/s, 40-130 W. https://developer.nvidia.com/blog/
           introducing-nvidia-jetson-thor-the-ultimate-platform-for-physical-ai/
[THOR-GPU] RidgeRun Jetson AGX Thor wiki, Blackwell GPU: "2560 CUDA Cores and 96 5th GEN Tensor
           Cores (3GPC), 10-TPCs". https://developer.ridgerun.com/wiki/index.php/
           NVIDIA_Jetson_AGX_Thor/Blackwell_GPU (third party, restating NVIDIA's Thor TRM), and
           NVIDIA developer forum thread "Clarification on CUDA Core and Tensor Core counts for
           Jetson AGX Thor" (runtime SM count 20). https://forums.developer.nvidia.com/t/
           clarification-on-cuda-core-and-tensor-core-counts-for-jetson-agx-thor/356355

Provenance caveat: the NVIDIA PDFs and pages above were read through stored excerpts and
third-party mirrors/quotations (search corpora), not fetched live from nvidia.com. The quoted figures
agree across independent copies, but re-check against the current NVIDIA documents before citing.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BOARDS", "BoardMode", "board_mode", "board_modes", "max_mode"]


@dataclass(frozen=True)
class BoardMode:
    """Vendor peak figures of one Jetson module in one nvpmodel power mode."""

    board: str
    mode: str
    sms: int | None
    cuda_cores: int | None
    gpu_max_mhz: float | None
    fp32_tflops: float | None
    fp16_tflops: float | None
    fp16_kind: str
    bandwidth_gbs: float | None
    cpu_cores: int | None
    source: str
    note: str = ""


def _fp32(cuda_cores: int, mhz: float) -> float:
    """Dense FP32 peak in TFLOP/s: cores x 2 FLOP/FMA x clock."""
    return round(cuda_cores * 2 * mhz * 1e6 / 1e12, 3)


_FP16_NOT_PUBLISHED = "none: NVIDIA publishes no FP16 TFLOPS for this module (only INT8 TOPS)"

BOARDS: dict[str, list[BoardMode]] = {
    "orin-nano-8gb": [
        BoardMode(
            board="orin-nano-8gb",
            mode="MAXN_SUPER",
            sms=8,
            cuda_cores=1024,
            gpu_max_mhz=1020.0,
            fp32_tflops=_fp32(1024, 1020.0),
            fp16_tflops=None,
            fp16_kind=_FP16_NOT_PUBLISHED,
            bandwidth_gbs=102.0,
            cpu_cores=6,
            source=(
                "cuda_cores=1024: [DS-NANO] p.1 'Jetson Orin Nano 8GB: 1024 NVIDIA CUDA cores | 32 Tensor "
                "cores'; sms=1024/128 (128 cores/SM per [TB-AGX]); gpu_max_mhz=1020: [SUPER] and "
                "[MODULES] 'Jetson Orin Nano Super' GPU max frequency 1020 MHz; fp32=1024*2*1020e6 "
                "= 2.089 TFLOP/s (derived); bandwidth=102 GB/s: [NANO-UG] Key Highlights 'Up to "
                "102 GB/s with the latest software stack' and [MODULES] '8GB 128-bit LPDDR5 102 GB/s'; "
                "cpu_cores=6: [DS-NANO] p.1 'Six-core Cortex-A78AE' and [MODULES]; mode name/ID 2: [L4T-PM]."
            ),
            note=(
                "JetPack 6.2+ (r36.4.x) Super mode. NVIDIA quotes AI perf as 67 sparse INT8 TOPS "
                "([NANO-UG]); no FP16 figure is published, so fp16 is None rather than guessed."
            ),
        ),
        BoardMode(
            board="orin-nano-8gb",
            mode="15W (original datasheet, pre-Super)",
            sms=8,
            cuda_cores=1024,
            gpu_max_mhz=625.0,
            fp32_tflops=_fp32(1024, 625.0),
            fp16_tflops=None,
            fp16_kind=_FP16_NOT_PUBLISHED,
            bandwidth_gbs=68.0,
            cpu_cores=6,
            source=(
                "[DS-NANO] p.1 Ampere GPU: 1024 CUDA cores, 'Maximum Operating Frequency: 625 MHz'; "
                "p.1 AI Performance '40 (Sparse) INT8 TOPs and 20 (Dense)'; p.7 Memory: 'Maximum "
                "frequency ... 2133 MHz. The theoretical peak memory bandwidth on Orin Nano 8GB is "
                "68 GB/s'; p.1 Operating Requirements 'Jetson Orin Nano 8GB Modes: 7W | 15W'; "
                "fp32=1024*2*625e6 = 1.28 TFLOP/s (derived); sms=1024/128."
            ),
            note=(
                "The datasheet's top mode (15W) as shipped before JetPack 6.2. Under the JetPack 6.2 "
                "Super tables the 15W mode's caps differ (a third-party copy of [L4T-PM] gives GPU "
                "612 MHz, EMC 2133 MHz) - not adopted here. Lowest mode 7W: its GPU clock cap was not "
                "found in a retrievable NVIDIA source, so it is not listed. 25W Super mode likewise omitted."
            ),
        ),
    ],
    "orin-nx-16gb": [
        BoardMode(
            board="orin-nx-16gb",
            mode="MAXN_SUPER",
            sms=8,
            cuda_cores=1024,
            gpu_max_mhz=1173.0,
            fp32_tflops=_fp32(1024, 1173.0),
            fp16_tflops=None,
            fp16_kind=_FP16_NOT_PUBLISHED,
            bandwidth_gbs=102.0,
            cpu_cores=8,
            source=(
                "cuda_cores=1024: [DS-NX] p.1 '1024 NVIDIA CUDA cores | 32 Tensor cores'; sms=1024/128; "
                "gpu_max_mhz=1173: [SUPER] (MAXN_SUPER, Orin NX 16GB GPU up to 1173 MHz, 40 W, "
                "157 sparse INT8 TOPS); fp32=1024*2*1173e6 = 2.402 TFLOP/s (derived); bandwidth=102: "
                "[DS-NX] p.9 'maximum frequency of Jetson Orin NX is 3200 MHz, and has a theoretical "
                "peak memory bandwidth of 102 GB/s' (Super mode does not raise the NX memory clock); "
                "cpu_cores=8: [DS-NX] p.1 and [MODULES] '8-core Arm Cortex-A78AE'."
            ),
            note=(
                "MAXN_SUPER is mode ID 0 on Orin NX 16GB under JetPack 6.2 ([L4T-PM]); per a third-party "
                "copy of that table (ARK-Electronics ark_jetson_kernel docs/power.md) the 40W mode also "
                "caps the GPU at 1173 MHz. No FP16 figure published by NVIDIA."
            ),
        ),
        BoardMode(
            board="orin-nx-16gb",
            mode="25W (original datasheet, pre-Super)",
            sms=8,
            cuda_cores=1024,
            gpu_max_mhz=918.0,
            fp32_tflops=_fp32(1024, 918.0),
            fp16_tflops=None,
            fp16_kind=_FP16_NOT_PUBLISHED,
            bandwidth_gbs=102.0,
            cpu_cores=8,
            source=(
                "[DS-NX] p.1 Ampere GPU 'ONX 16GB: Maximum Operating Frequency: 918 MHz', AI Performance "
                "'100 (Sparse) INT8 TOPs and 50 (Dense)', Operating Requirements 'Jetson Orin NX 16GB "
                "Modes: 10W | 15W | 25W'; p.9 Memory 102 GB/s; [MODULES] GPU max frequency 918 MHz; "
                "fp32=1024*2*918e6 = 1.88 TFLOP/s (derived); sms=1024/128."
            ),
            note=(
                "Datasheet top mode before JetPack 6.2. Lowest mode 10W: its GPU clock cap was not "
                "found in a retrievable NVIDIA source, so it is not listed."
            ),
        ),
    ],
    "agx-orin-64gb": [
        BoardMode(
            board="agx-orin-64gb",
            mode="MAXN",
            sms=16,
            cuda_cores=2048,
            gpu_max_mhz=1300.0,
            fp32_tflops=_fp32(2048, 1300.0),
            fp16_tflops=None,
            fp16_kind=_FP16_NOT_PUBLISHED,
            bandwidth_gbs=204.8,
            cpu_cores=12,
            source=(
                "[DS-AGX] p.7 Ampere GPU 'JAO 64GB: two GPC | eight TPC | 2048 NVIDIA CUDA cores | 64 "
                "Tensor cores | 170 Sparse TOPS | Maximum Operating Frequency: 1.3 GHz'; p.12 Memory "
                "Subsystem '256-bit LPDDR5 | Maximum Memory Bus Bandwidth (up to) 204.8 GB/s'; "
                "[TB-AGX] GPU: 16 SMs x 128 CUDA cores, '5.3 FP32 TFLOPs', 12-core Cortex-A78AE CPU; "
                "fp32=2048*2*1300e6 = 5.325 TFLOP/s (derived; matches [TB-AGX] 5.3)."
            ),
            note=(
                "[DS-AGX] prints the clock as '1.3 GHz' (the nvpmodel table may show 1301 MHz; 1.3 GHz "
                "kept as printed). GPU-only tensor INT8 = 170 sparse / 85 dense TOPS (sparse doubles "
                "throughput per [DS-AGX] p.18); no FP16 TFLOPS published. Lower modes (15W/30W/50W, "
                "[L4T-PM]) cap GPU clock and TPC count but their values were not found in a "
                "retrievable NVIDIA source, so they are not listed."
            ),
        ),
    ],
    "thor": [
        BoardMode(
            board="thor",
            mode="MAXN",
            sms=20,
            cuda_cores=2560,
            gpu_max_mhz=1570.0,
            fp32_tflops=_fp32(2560, 1570.0),
            fp16_tflops=258.5,
            fp16_kind=(
                "tensor core, dense, derived = 517 sparse / 2; NVIDIA's [THOR] table prints FP16 only as "
                "sparse, and prints both sparse and dense for FP4 (2070/1035) and FP8 (1035/517), i.e. "
                "its own 2:1 structured-sparsity factor on this part"
            ),
            bandwidth_gbs=273.0,
            cpu_cores=14,
            source=(
                "[THOR] Jetson T5000 spec table: '2560-core NVIDIA Blackwell architecture GPU with 96 "
                "fifth-generation Tensor Cores', GPU max frequency 1.57 GHz, FP16 517 TFLOPS (sparse), "
                "FP8 517 TFLOPS dense, FP4 1035 dense / 2070 sparse, 128 GB LPDDR5X 273 GB/s, "
                "14-core Arm Neoverse-V3AE CPU, 40-130 W; sms=20: 2560/128 = 20, and [THOR-GPU] "
                "10 TPCs x 2 SMs, runtime SM count 20; fp32=2560*2*1570e6 = 8.038 TFLOP/s (derived)."
            ),
            note=(
                "Jetson AGX Thor developer kit / T5000 module at its maximum mode. The fp16 value is "
                "derived (sparse/2), not printed by NVIDIA as dense. Some third-party tables give "
                "FP32 = 8.064 TFLOP/s, which implies 1575 MHz; 1.57 GHz as printed is used here. "
                "Lower modes (the 40 W floor of the 40-130 W range and intermediate nvpmodel modes) "
                "have no sourced GPU clock cap, so they are not listed."
            ),
        ),
    ],
}


def board_modes(name: str) -> list[BoardMode]:
    """All sourced power modes of ``name``; raises ValueError naming the valid boards."""
    try:
        return list(BOARDS[name])
    except KeyError:
        valid = ", ".join(sorted(BOARDS))
        raise ValueError(f"unknown board {name!r}; valid boards: {valid}") from None


def board_mode(name: str, mode: str) -> BoardMode:
    """The mode of ``name`` called ``mode`` (case-insensitive); ValueError listing its modes."""
    modes = board_modes(name)
    for candidate in modes:
        if candidate.mode.lower() == mode.lower():
            return candidate
    listed = "; ".join(candidate.mode for candidate in modes)
    raise ValueError(f"board {name!r} has no power mode {mode!r}; its sourced modes: {listed}")


def max_mode(name: str) -> BoardMode:
    """The mode of ``name`` with the highest fp16_tflops.

    Modes whose fp16_tflops is None (every Orin entry: NVIDIA publishes no FP16 figure) rank below
    any mode that has one; ties and all-None boards fall back to the highest fp32_tflops.
    """

    def key(m: BoardMode) -> tuple[float, float]:
        fp16 = m.fp16_tflops if m.fp16_tflops is not None else float("-inf")
        fp32 = m.fp32_tflops if m.fp32_tflops is not None else float("-inf")
        return (fp16, fp32)

    return max(board_modes(name), key=key)
