#!/usr/bin/env bash
# The wheels scripts/gpu_check.sh needs on the borrowed GPU machine (Python 3.12, x86-64, torch
# 2.11+cu130, transformers 5.17, peft, accelerate 1.15; no network there), downloaded here into
# DIR (default .whl, which git ignores through .git/info/exclude). One version of each, no deps
# of their own beyond what is listed: what the machine lacks, found by running both tiers'
# self-test with every other package hidden (docs/gpu.md, "The GPU check").
#   Tier 1: trl 1.9.0 (Axolotl 0.19's pin) and datasets 4.8.4 with dill and multiprocess.
#   Tier 2: Axolotl 0.19.0 (torch >=2.11,<=2.13; it pins transformers 5.16.1 and is installed
#     --no-deps over the machine's 5.17) and what its train path imports; bitsandbytes 0.50.2
#     with only its CPU and CUDA 13.0 libraries (43 MB -> 3 MB; the machine's torch is cu130);
#     DeepSpeed 0.19.8, built here from its source release with no compiled ops (DS_BUILD_OPS=0,
#     `pip wheel --no-deps`: a py3-none-any wheel of about 2 MB; the check trains with torch's
#     AdamW and no CPU offload, so nothing compiles there), and the packages DeepSpeed imports
#     that the machine lacks (hjson, py-cpuinfo, msgpack, ninja, einops).
# Usage: bash scripts/gpu_check_wheels.sh [DIR]; prints the total size (the transfer limit is
# 64 MiB with the working tree). DeepSpeed's build imports torch: BUILD_PYTHON (default .venv's
# python, else python3) must have torch; the wheel itself does not depend on that torch.
set -euo pipefail
dir="${1:-.whl}"
mkdir -p "$dir"
venv_python="$(dirname "$0")/../.venv/bin/python"
build_python="${BUILD_PYTHON:-$( [ -x "$venv_python" ] && echo "$venv_python" || echo python3)}"
tier1=(trl==1.9.0 datasets==4.8.4 dill==0.4.1 multiprocess==0.70.19)
tier2=(axolotl==0.19.0 addict==2.4.0 annotated-types==0.8.0 backoff==2.2.1 distro==1.9.0
  evaluate==0.4.1 fastcore==2.2.41 fire==0.7.1 opentelemetry-api==1.45.2 platformdirs==4.14.8
  posthog==6.7.11 pydantic==2.12.5 pydantic-core==2.41.5 pytz==2026.6 termcolor==3.3.0
  typing-inspection==0.4.5 wandb==0.31.0)
deepspeed_deps=(hjson==3.1.0 py-cpuinfo==9.0.0 msgpack==1.1.2 ninja==1.13.0 einops==0.8.1)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$dir" \
  "${tier1[@]}" "${tier2[@]}" "${deepspeed_deps[@]}" bitsandbytes==0.50.2
# Axolotl's contribs are published as sdists only: build their (pure Python) wheels here
python3 -m pip wheel -q --no-deps -w "$dir" axolotl-contribs-lgpl==0.0.7 axolotl-contribs-mit==0.0.6
# DeepSpeed publishes a source release only: a pure-Python wheel, no ops built ahead of time
DS_BUILD_OPS=0 "$build_python" -m pip wheel -q --no-deps --no-build-isolation -w "$dir" \
  deepspeed==0.19.8
python3 - "$dir" <<'EOF'
"""Keep bitsandbytes' CPU and CUDA 13.0 libraries only, and drop them from RECORD."""
import glob
import os
import sys
import zipfile

keep = ("libbitsandbytes_cpu.so", "libbitsandbytes_cuda130.so")
for path in glob.glob(os.path.join(sys.argv[1], "bitsandbytes-*.whl")):
    def dropped(name):
        return name.startswith("bitsandbytes/libbitsandbytes_") and not name.endswith(keep)

    with zipfile.ZipFile(path) as src:
        if not any(dropped(n) for n in src.namelist()):
            continue
        items = [(i, src.read(i)) for i in src.infolist() if not dropped(i.filename)]
    with zipfile.ZipFile(path + ".tmp", "w", zipfile.ZIP_DEFLATED) as out:
        for info, data in items:
            if info.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines(keepends=True)
                data = "".join(ln for ln in lines if not dropped(ln.split(",")[0])).encode()
            out.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    os.replace(path + ".tmp", path)
EOF
ls -1 "$dir"
du -sh "$dir"
