"""The data stage: Br35H's layout and annotations (``br35h``), image decoding (``images``),
the checksummed array cache (``cache``), near-duplicate fingerprints (``duplicates``), the
grouped and healthy splits (``splits``, ``healthy``), training batches (``loaders``), the
external set (``external``), file listing (``files``) and download (``fetch``).
"""
