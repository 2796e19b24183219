#!/usr/bin/env bash
# The Python package (setup.py, python/): installed with pip, offline, into
# a fresh venv over Debian's python3 and numpy, then tests/python/
# test_magiclens.py checks it against the CLI and the float64 reference on
# tiny random checkpoints: embeddings bit-identical to `magiclens embed`
# and within the parity bounds, every image input kind, searches equal to
# `magiclens search --json`, errors, concurrency, Ctrl-C and RSS.
set -euo pipefail
PY=/usr/bin/python3
case "$BUILD" in /*) ML="$BUILD/magiclens" ;; *) ML="$ML_ROOT/$BUILD/magiclens" ;; esac
T="$ML_TMP/python"
rm -rf "$T"; mkdir -p "$T"

# What the package needs (scripts/install-deps.sh installs it).
inc=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
[ -f "$inc/Python.h" ] || { echo "SKIP t_python: no Python.h (python3-dev not installed)"; exit 77; }
$PY -c 'import ensurepip, setuptools, numpy, PIL' 2> /dev/null ||
    { echo "SKIP t_python: python3-venv, python3-setuptools, python3-numpy or python3-pil missing"; exit 77; }
# A sanitizer build cannot be loaded into an uninstrumented interpreter.
if nm "$BUILD/libmagiclens.a" 2> /dev/null | grep -q '__asan_\|__ubsan_'; then
    echo "SKIP t_python: $BUILD is a sanitizer build; the extension needs an uninstrumented library"
    exit 77
fi

# Install as a user would, offline: a venv seeing Debian's numpy, pip
# building from this tree only.
$PY -m venv --system-site-packages "$T/venv"
if ! MAGICLENS_BUILD_DIR="$BUILD" "$T/venv/bin/pip" install --no-build-isolation --no-index \
    --no-cache-dir --disable-pip-version-check . > "$T/pip.log" 2>&1; then
    tail -n 40 "$T/pip.log"
    echo "FAIL: pip install --no-build-isolation --no-index . failed"
    exit 1
fi
echo "ok  pip install --no-build-isolation --no-index . into a fresh venv"

# Fixtures: the image set, a gallery folder, two tiny models.
$PY tests/reference/make_images.py "$T/img" --no-expected > /dev/null
mkdir -p "$T/gallery/sub"
n=0
for f in $(cat "$T/img/good.txt"); do
    case $((n % 3)) in 0) cp "$T/img/$f" "$T/gallery/sub/" ;; *) cp "$T/img/$f" "$T/gallery/" ;; esac
    n=$((n + 1))
done
$PY tests/reference/make_checkpoint.py --size tiny --seed 1 --out "$T/a.pkl" > /dev/null
$PY tests/reference/make_checkpoint.py --size tiny64 --seed 3 --dtype bfloat16 --out "$T/c.pkl" > /dev/null
"$ML" convert --model "$T/a.pkl" --output "$T/a.mlens" --quiet

# Run from outside the tree: the installed package, not python/.
cd "$T"
timeout 600 "$T/venv/bin/python" "$ML_ROOT/tests/python/test_magiclens.py" "$T" "$ML" "$ML_ROOT"
