#!/usr/bin/env bash
# Build (once) the arm64 Debian sysroot and aarch64 Python packages that run rpi4 artifacts under
# qemu-aarch64-static. Cached under ${EDGEVISION_CACHE:-~/.cache/edgevision}/rpi4-sysroot-<suite>-<key>;
# a second call finds the stamp and only prints the path. Prints the sysroot directory on its last line.
# The per-runtime virtualenvs that hold the installed edgevision wheel are made inside it later, by
# edgevision.emulation.device_env (one per runtime and wheel hash, under opt/venvs/).
#
# Needs: debootstrap, dpkg-deb, qemu-user-static (apt-get install debootstrap qemu-user-static),
# network access to deb.debian.org and PyPI on the first run, and root (debootstrap creates
# device nodes; with --foreign and dpkg-deb -x only the download step needs it).
#
#   edgevision/emulation/rpi4_sysroot.sh            # build or reuse, print the path
#   edgevision/emulation/rpi4_sysroot.sh --rebuild  # throw the cached one away first
#   edgevision/emulation/rpi4_sysroot.sh --path     # print the path if it is built, exit 1 if not (no build)
set -euo pipefail

SUITE=bookworm                  # Python 3.11, as on Raspberry Pi OS (bookworm)
MIRROR=${EDGEVISION_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# The TVM RPC server's package set (the emulated RPC board and tuning over RPC use it; edgevision
# itself runs from the venvs under opt/venvs/). Keep in step with edgevision/data/targets/rpi4.toml [requires] and constraints.txt.
# cloudpickle + psutil: the TVM RPC server (tvm.exec.rpc_server) needs them for its worker process.
WHEELS=(apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post1 numpy==2.4.6
        opencv-python-headless==5.0.0.93 cloudpickle==3.1.2 psutil==7.2.2)
KEY=$(printf '%s\n' "$SUITE" "${WHEELS[@]}" | sha256sum | cut -c1-12)
CACHE=${EDGEVISION_CACHE:-$HOME/.cache/edgevision}
PREFIX=rpi4-sysroot-$SUITE-
DEST=$CACHE/$PREFIX$KEY
STAMP=$DEST/.edgevision-complete

if [[ "${1:-}" == "--rebuild" ]]; then
    rm -rf "$DEST"
fi
if [[ -f "$STAMP" ]]; then
    echo "$DEST"
    exit 0
fi
if [[ "${1:-}" == "--path" ]]; then
    echo "rpi4 sysroot not built yet: run edgevision/emulation/rpi4_sysroot.sh" >&2
    exit 1
fi

for tool in debootstrap dpkg-deb qemu-aarch64-static; do
    command -v "$tool" >/dev/null || {
        echo "error: $tool not found — apt-get install debootstrap dpkg qemu-user-static" >&2; exit 2; }
done
PYTHON=${PYTHON:-python3}
"$PYTHON" -m pip --version >/dev/null 2>&1 || { echo "error: $PYTHON has no pip" >&2; exit 2; }

mkdir -p "$CACHE"
# Build beside the destination and rename at the end: an interrupted run leaves no half sysroot.
WORK=$(mktemp -d "$CACHE/.rpi4-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
start=$(date +%s)

echo "[1/3] debootstrap --foreign arm64 $SUITE (download only)" >&2
debootstrap --arch=arm64 --foreign --variant=minbase --include=python3 \
    "$SUITE" "$WORK/root" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }

# The second stage would need to run arm64 maintainer scripts; unpacking the packages is enough
# for a Python interpreter with its shared libraries.
echo "[2/3] unpacking $(ls "$WORK"/root/var/cache/apt/archives/*.deb | wc -l) packages" >&2
for deb in "$WORK"/root/var/cache/apt/archives/*.deb; do
    dpkg-deb -x "$deb" "$WORK/root"
done
rm -rf "$WORK"/root/var/cache/apt/archives/*.deb "$WORK"/root/debootstrap "$WORK"/root/dev/*
test -x "$WORK/root/usr/bin/python3.11" || { echo "error: no python3.11 in the sysroot" >&2; exit 1; }

echo "[3/3] aarch64 wheels: ${WHEELS[*]}" >&2
"$PYTHON" -m pip install --quiet --disable-pip-version-check --no-compile \
    --target "$WORK/root/opt/edgevision/site-packages" \
    --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
    --python-version 3.11 --implementation cp --abi cp311 --only-binary=:all: "${WHEELS[@]}"

# The device runs the runtime only: drop what a Pi never loads (the LLVM compiler, CUDA stubs).
SITE=$WORK/root/opt/edgevision/site-packages
rm -f "$SITE"/tvm/lib/libtvm_compiler.so "$SITE"/tvm/lib/libtvm_runtime_cuda.so
rm -rf "$SITE"/tvm/3rdparty "$SITE"/tvm/src "$SITE"/tvm/include "$SITE"/tvm/web

# Prove the interpreter and runtime start before calling the cache complete.
TVM_USE_RUNTIME_LIB=1 PYTHONPATH="$SITE" PYTHONNOUSERSITE=1 \
    qemu-aarch64-static -cpu cortex-a72 -L "$WORK/root" "$WORK/root/usr/bin/python3.11" -c \
    "import platform, numpy, cv2, cloudpickle, psutil, tvm; assert platform.machine() == 'aarch64'; print('ok', tvm.__version__, numpy.__version__, cv2.__version__)" >&2

date -u +%FT%TZ >"$WORK/root/.edgevision-complete"
rm -rf "$DEST"
mv "$WORK/root" "$DEST"
# Older sysroots of this layout (another package set) are dead weight: ~420 MB each. Only this
# script's own prefix: other layouts in the cache belong to other edgevision versions.
for old in "$CACHE"/"$PREFIX"*; do
    [[ "$old" != "$DEST" && -f "$old/.edgevision-complete" ]] && rm -rf "$old"
done
echo "built in $(( $(date +%s) - start )) s, $(du -sh "$DEST" | cut -f1)" >&2
echo "$DEST"
