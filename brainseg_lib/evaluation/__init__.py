"""The evaluation stage: metrics and their empty-mask rule (``metrics``), one bootstrap core
(``bootstrap``), boundary metrics (``boundary``), threshold sweeps (``thresholds``), scoring a
checkpoint on a split (``evaluate``) and on the external set (``external``).
"""
