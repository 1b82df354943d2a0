"""Applications for users: segment their own scans with the released model (``predict``),
through PyTorch or onnxruntime (``models``, ``onnx_runtime``: every output checked before it
is trusted), with hardened input handling (``scans``) and a predictions table kept row by row
and resumable (``table``); NIfTI volumes and DICOM series segmented slice by slice into NIfTI
masks with their geometry (``volumes``, ``dicom_series``).
"""
