"""The paper's own figures, read from ``references/khadra2026_table1.csv``.

Table I of Khadra et al. (2026) is stored as data with its source; this module is the one
place code reads the paper's row ("Our" in the paper, ``Khadra et al. 2026 (paper)`` in the
CSV) from, so no figure of the paper is typed into code.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pandas as pd

from brainseg_lib import paths

PAPER_ROW = "Khadra et al. 2026 (paper)"
COLUMNS = ["Study", "F1", "IoU", "Precision", "Recall", "Specificity", "Accuracy"]


def cited_rows(path: str | Path | None = None) -> pd.DataFrame:
    """The six cited studies and the paper's own row, with Reference and Source columns."""
    df = pd.read_csv(path or paths.PAPER_TABLE1_CSV)
    missing = set(COLUMNS) - set(df.columns)
    if missing:
        raise ValueError(f"{path or paths.PAPER_TABLE1_CSV} lacks columns {sorted(missing)}")
    return df


@lru_cache(maxsize=None)
def paper_figure(column: str) -> float:
    """One figure of the paper's own row, e.g. ``paper_figure("F1")`` (NaN where not given)."""
    row = cited_rows().set_index("Study").loc[PAPER_ROW]
    return float(row[column])
