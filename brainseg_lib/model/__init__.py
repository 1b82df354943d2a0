"""The model stage: the paper's U-Net (``unet``), safe checkpoints (``checkpoint``), the
released model with its checksum (``released``) and its ONNX export (``onnx``).
"""
