"""The report layer: everything a reader sees in words or pages is written here, from data:
findings sentences (``findings``), README sections (``readme``), the model card
(``model_card``), figures helpers (``plots``) and the HTML report (``html``).
"""
