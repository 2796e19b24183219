"""setup.py - builds the Python package `magiclens` (python/magiclens/): a
CPython extension, magiclens._core (python/ext/*.c), linked against the
static library that the Makefile builds.

`pip install .` (or, offline with Debian's python3-setuptools and
python3-numpy, `pip install --no-build-isolation .`) runs `make lib` here
first, so the library's kernels get exactly the Makefile's per-file ISA
flags, then compiles the extension and links build/libmagiclens.a (built
with -fPIC) and the libraries pkg-config names, as the Makefile does.
MAGICLENS_BUILD_DIR picks another build folder (default: build).
docs/python.md explains the choices.
"""
import os
import subprocess

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))
BUILD = os.environ.get("MAGICLENS_BUILD_DIR", "build")
BUILD_DIR = BUILD if os.path.isabs(BUILD) else os.path.join(ROOT, BUILD)
LIBRARY = os.path.join(BUILD_DIR, "libmagiclens.a")

# The Makefile's PKGS (OpenMPI only when the library is built with it).
PKGS = ["libpng", "libwebp", "libutf8proc", "zlib", "jansson", "libxxhash", "libarchive",
        "libmicrohttpd", "libcurl", "libxml-2.0", "libbrotlidec", "msgpack"]
FALLBACK_LIBS = ["png16", "webp", "utf8proc", "z", "jansson", "xxhash", "archive", "microhttpd",
                 "curl", "xml2", "brotlidec", "msgpackc"]


def pkg_config_libs():
    """(libraries, library_dirs) for the Makefile's packages."""
    pkgs = list(PKGS)
    if subprocess.call(["pkg-config", "--exists", "ompi-c"], stderr=subprocess.DEVNULL) == 0:
        pkgs.append("ompi-c")
    try:
        flags = subprocess.check_output(["pkg-config", "--libs"] + pkgs, text=True).split()
    except (OSError, subprocess.CalledProcessError):
        return FALLBACK_LIBS + ["jpeg", "gif", "m"], []
    libs = [f[2:] for f in flags if f.startswith("-l")]
    dirs = [f[2:] for f in flags if f.startswith("-L")]
    return libs + ["jpeg", "gif", "m"], dirs


class BuildExtWithLibrary(build_ext):
    """Builds libmagiclens.a with the Makefile before the extension."""

    def run(self):
        jobs = str(max(1, min(os.cpu_count() or 1, 8)))
        subprocess.check_call(["make", "-C", ROOT, "-j" + jobs, "lib", "BUILD=" + BUILD])
        super().run()


libraries, library_dirs = pkg_config_libs()
source_root = ROOT.replace("\\", "\\\\").replace('"', '\\"')
core = Extension(
    "magiclens._core",
    sources=sorted(os.path.join("python", "ext", f)
                   for f in os.listdir(os.path.join(ROOT, "python", "ext")) if f.endswith(".c")),
    depends=[os.path.join("python", "ext", "ext.h"), LIBRARY],
    include_dirs=[os.path.join(ROOT, "include"), os.path.join(ROOT, "src")],
    define_macros=[("_GNU_SOURCE", None), ("MLPY_SOURCE_ROOT", '"%s"' % source_root)],
    extra_compile_args=["-std=c11", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter",
                        "-Wno-missing-field-initializers", "-pthread"],
    extra_objects=[LIBRARY],
    libraries=libraries,
    library_dirs=library_dirs,
    extra_link_args=["-pthread"],
)

setup(
    name="magiclens",
    version="0.1.0",
    description="MagicLens image retrieval with open-ended instructions (C engine)",
    package_dir={"": "python"},
    packages=["magiclens"],
    package_data={"magiclens": ["__init__.pyi", "py.typed"]},
    ext_modules=[core],
    cmdclass={"build_ext": BuildExtWithLibrary},
    install_requires=["numpy"],
    python_requires=">=3.9",
    options={"build": {"build_base": os.path.join(BUILD_DIR, "python")},
             "egg_info": {"egg_base": os.path.relpath(os.path.join(BUILD_DIR, "python"), ROOT)}},
)
