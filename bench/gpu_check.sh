#!/usr/bin/env bash
# nettle's GPU checks in one script: PhaseTimer synchronisation and per-phase peaks, MemoryMeter
# on the CUDA allocator, Trainer fp32 / bf16 / bf16 + channels_last + compile on wrn-16-8,
# PGD bf16 + channels_last vs torchattacks fp32, substitutes vs the dense conv
# (bench/gpu_check.py). Under 8 minutes on one H100; prints Markdown tables headed by the
# card's name, for docs/benchmarks.md. Without a CUDA GPU it says so and exits 0.
#
#   bench/gpu_check.sh [--quick]        (PYTHON=... to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec timeout 480 "$PYTHON" bench/gpu_check.py "$@"
