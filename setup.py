"""taplab's build: the pure-Python package plus optional C kernels from native/.

The C/C++ extensions need only a C/C++ compiler (with OpenMP for the warp) and Python's
headers. Where they cannot be built, installation still succeeds and taplab uses its numpy/torch
reference kernels (``taplab info`` says which are active). The CUDA warp kernel
(``native/cuda/warp.cu``) is compiled on first use with nvcc and cached (taplab/native/cuda.py),
because pip builds in an isolated environment that cannot see which torch will be used.
"""

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """Build the kernels when possible; never fail the install over them."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any compiler trouble means "use the fallback"
            print(f"taplab: native kernels not built ({exc}); the numpy reference will be used")

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            print(f"taplab: {ext.name} not built ({exc}); the numpy reference will be used")


setup(
    name="taplab",
    version="0.1.0",
    description="Compressed-domain video semantic segmentation: segment video many times faster than per-frame CNNs",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # models/ (the shipped trained models and their cards) is installed as the package data of
    # taplab._models, so that `taplab segment` finds the default model from any working directory.
    packages=find_packages(include=["taplab", "taplab.*"]) + ["taplab._models", "taplab._cuda"],
    package_dir={"taplab._models": "models", "taplab._cuda": "native/cuda"},
    package_data={"taplab._models": ["*.pt", "*.md"], "taplab._cuda": ["*.cu"]},
    install_requires=[
        # torch is pinned by the README's install step (a CPU wheel); any 2.x works here.
        "torch>=2.0",
        "av>=12",
        "numpy>=1.24",
        "motion-vector-extractor>=1.1",
        "opencv-python>=4.8",
        "click>=8.1",
        "matplotlib>=3.7",  # taplab bench's plots
        # the default inference engine on CPU (taplab/nets/engines.py), and the ONNX files it exports and reads
        "onnxruntime>=1.16",
        "onnx>=1.14",
    ],
    # ray: `taplab segment --ray` (taplab.batch), imported only when asked for; the tests run a local Ray with it
    extras_require={"test": ["pytest>=7"], "ray": ["ray>=2.9"]},
    ext_modules=[
        Extension("taplab.native._mc", ["native/cpu/mc.c"], depends=["native/cpu/buffers.h"],
                  include_dirs=["native/cpu"], extra_compile_args=["-O3"]),
        Extension("taplab.native._labels", ["native/cpu/labels.c"], depends=["native/cpu/buffers.h"],
                  include_dirs=["native/cpu"], extra_compile_args=["-O3", "-fopenmp"], extra_link_args=["-fopenmp"]),
        # C++ with OpenMP (the libgomp torch itself loads, so torch.set_num_threads bounds its threads)
        Extension("taplab.native._warp", ["native/cpu/warp.cpp"], depends=["native/cpu/buffers.h"],
                  include_dirs=["native/cpu"], language="c++",
                  extra_compile_args=["-O3", "-std=c++17", "-fopenmp"], extra_link_args=["-fopenmp"]),
    ],
    cmdclass={"build_ext": OptionalBuildExt},
    entry_points={"console_scripts": ["taplab=taplab.cli:main"]},
)
