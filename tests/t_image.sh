#!/usr/bin/env bash
# Image decoding + preprocessing against PIL and the numpy reference:
# writes the fixtures into $ML_TMP/images, then runs the C checks on them.
set -eu
cd "$(dirname "$0")/.."
BUILD="${BUILD:-build}"
ML_TMP="${ML_TMP:-$PWD/$BUILD/test-tmp}"
rm -rf "$ML_TMP/images"
/usr/bin/python3 tests/reference/make_images.py "$ML_TMP/images"
"$BUILD/tests/test_image" "$ML_TMP/images"
