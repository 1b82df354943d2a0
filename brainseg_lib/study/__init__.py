"""The study: runs and their profiles (``experiment``, ``profiles``), the notebooks and
``./run_all.sh``'s engine (``notebooks``, ``run_all``, ``staging``), sweeps and lever trials,
Table I, the leakage audit, benchmarks and the model release.
"""
