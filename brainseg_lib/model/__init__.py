"""The model stage: the paper's U-Net (``unet``), safe checkpoints (``checkpoint``), the
released model with its checksum (``released``), its ONNX export (``onnx``) and a seed
ensemble of U-Nets as one model (``ensemble``).
"""
