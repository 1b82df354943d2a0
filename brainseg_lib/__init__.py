"""brainseg_lib: a reproduction of Khadra et al. (2026), U-Net brain-tumour segmentation on Br35H.

Modules, by stage: ``paths`` (folders), ``data`` (files, masks, cache),
``loaders`` (tensors, augmentation), ``model`` (U-Net), ``losses``,
``metrics``, ``train``, ``checkpoint``, ``evaluate``, ``experiment`` (one run
end to end), ``explore`` (dataset facts), ``plots``, ``compare`` (Table I).
"""
__version__ = "0.1.0"
