"""``python -m brainseg_lib``: see ``brainseg_lib.cli``."""
from brainseg_lib.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
