"""Image-level tumour detection from the segmentation: scores of unseen scans (``scores``),
their statistics (``roc``), the summary over report scans and seeds (``summary``), tables
(``tables``) and figures (``figures``).
"""
