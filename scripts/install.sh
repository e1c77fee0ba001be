#!/usr/bin/env bash
# Create .venv in the repository root and install monai-anon with its test tools.
# torch/torchvision go first so that sdists needing torch at build time (sam2, pulled in by
# monailabel) build against them instead of downloading another multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1" "setuptools>=68" wheel
.venv/bin/python -m pip install -q --no-build-isolation -e ".[test]"
