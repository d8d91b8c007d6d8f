"""Installs the `gmmseg` package (GMMSeg for detectron2) from projects/GMMSeg."""

from setuptools import find_packages, setup

setup(
    name="gmmseg",
    version="0.1.0",
    description="GMMSeg: Gaussian mixture based generative semantic segmentation, for detectron2",
    package_dir={"": "projects/GMMSeg"},
    packages=find_packages("projects/GMMSeg"),
    python_requires=">=3.8",
    install_requires=["torch", "numpy", "scipy", "timm"],
    extras_require={"dev": ["pytest", "scikit-learn"], "cityscapes": ["cityscapesscripts"]},
)
