"""Torch-free inference: onnxruntime session, batch runner, heatmaps and gallery.

Import rule: nothing here imports torch, transformers, brisc.train or brisc.export.
"""
