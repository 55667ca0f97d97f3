"""Package metadata for pixelkm.

The Triton kernels live in the top-level ``kernels/`` folder of the repository and are installed as
``pixelkm._kernels`` so that they cannot clash with the unrelated PyPI package named ``kernels``.
"""

from setuptools import find_packages, setup

PACKAGES = [*find_packages(include=["pixelkm", "pixelkm.*"]), "pixelkm._kernels"]

setup(
    name="pixelkm",
    version="0.1.0",
    description="GPU-first k-means for huge images and any tensor data",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=PACKAGES,
    package_dir={"pixelkm._kernels": "kernels"},
    package_data={"pixelkm": ["data/*.png", "data/*.md"]},
    include_package_data=True,
    install_requires=[
        "torch>=2.1",
        "numpy>=1.23",
        "pillow>=9.1",
        "scipy>=1.9",  # image background removal: ndimage labelling, hole filling, morphology
        # Triton ships wheels for Linux x86-64/aarch64 only; elsewhere the torch backend is used.
        "triton>=3.0; platform_system == 'Linux' and (platform_machine == 'x86_64' or platform_machine == 'aarch64')",
    ],
    extras_require={
        "plot": ["matplotlib>=3.6"],
        "progress": ["tqdm>=4.60"],
        "test": ["pytest>=7", "scikit-learn>=1.4", "hypothesis>=6", "matplotlib>=3.6", "tqdm>=4.60"],
        "bench": ["asv>=0.6", "scikit-learn>=1.4", "matplotlib>=3.6", "imagequant>=1.1"],
    },
    entry_points={"console_scripts": ["pixelkm=pixelkm.cli:main"]},
)
