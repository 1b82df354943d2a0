"""Applications for users: segment their own scans with the released model (``predict``),
through PyTorch or onnxruntime (``onnx_runtime``), with hardened input handling (``scans``).
"""
