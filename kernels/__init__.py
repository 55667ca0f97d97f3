"""Triton kernels of pixelkm, installed as ``pixelkm._kernels``.

Each module holds one kernel and its launcher. They import torch and triton, never pixelkm.
"""
