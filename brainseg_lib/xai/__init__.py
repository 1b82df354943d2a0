"""Explainability (the paper promises it and shows none): captum attributions of the U-Net
(``attribution``), deletion curves that test them (``deletion``), the checks run on a sample
(``checks``) and their figures (``figures``).
"""
