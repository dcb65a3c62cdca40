#!/usr/bin/env bash
# Type-check the TensorRT path (engine build, engine cache, TensorRT runner, edge_had.cuda) against
# tensorrt-stubs, since TensorRT itself cannot be installed here. The stubs wheel declares
# dependencies that cannot install (the real tensorrt), so only its two stub folders are used:
# copied into a scratch directory, the lines current mypy rejects patched, put on MYPYPATH.
set -euo pipefail
cd "$(dirname "$0")/.."

STUBS_VERSION=10.13.0.35.1
FILES=(edge_had/build/tensorrt_engine.py edge_had/build/engine_cache.py
       edge_had/runtime/tensorrt_runner.py edge_had/cuda/)

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
pip download --quiet --no-deps --only-binary=:all: "tensorrt-stubs==$STUBS_VERSION" -d "$scratch/wheel"
python -m zipfile -e "$scratch"/wheel/tensorrt_stubs-*.whl "$scratch/unpacked"
mkdir -p "$scratch/stubs"
cp -r "$scratch/unpacked/tensorrt" "$scratch/unpacked/tensorrt_bindings" "$scratch/stubs/"

# Patch what current mypy rejects (syntax errors) or misreads; each patch fails loudly when it no
# longer matches (then the stubs changed: look again).
python - "$scratch/stubs" <<'PY'
import re
import sys
from pathlib import Path

stubs = Path(sys.argv[1])
# 0. `bool: DataType` (trt.bool, DataType.BOOL) at module level shadows the builtin in the stubs'
#    own annotations: every `-> bool` would become an unresolved type (and `if not ok:` unreachable).
for name in ("tensorrt/__init__.pyi", "tensorrt_bindings/__init__.pyi", "tensorrt_bindings/tensorrt.pyi"):
    stub = stubs / name
    lines = stub.read_text().splitlines(keepends=True)
    kept = [line for line in lines if not line.startswith("bool: ")]
    if len(kept) != len(lines) - 1:
        sys.exit(f"mypy_trt.sh: {stub}: no single module-level `bool: DataType`; the stubs changed")
    stub.write_text("".join(kept))
path = stubs / "tensorrt_bindings/tensorrt.pyi"
text = path.read_text()
# 1. parameters named with the keyword `in` (IPluginV3.on_shape_change, configure_plugin, ...)
text, renamed = re.subn(r"^(\s*def \w+\(.*?[(,] ?)in: ", r"\1in_: ", text, flags=re.MULTILINE)
# 2. a parameter without a default after ones with defaults (INetworkDefinition.add_scale_nd)
old = "power: Weights = None, channel_axis: int)"
defaulted = text.count(old)
text = text.replace(old, "power: Weights = None, channel_axis: int = ...)")
if renamed < 1 or defaulted != 1:
    sys.exit(f"mypy_trt.sh: {path}: patches matched {renamed} `in` parameters and {defaulted} add_scale_nd; "
             "the stubs changed, update the patches")
path.write_text(text)
print(f"patched tensorrt-stubs: trt.bool, {renamed} parameter(s) named `in`, add_scale_nd's channel_axis")
PY

echo "mypy $(python -m mypy --version | cut -d' ' -f2) against tensorrt-stubs $STUBS_VERSION: ${FILES[*]}"
MYPYPATH="$scratch/stubs" python -m mypy --config-file .ci/mypy-trt.ini "${FILES[@]}"
