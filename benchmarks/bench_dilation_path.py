"""The dilation-path benchmark's one command (the code lives in ``benchmarks/dilation/``).

python benchmarks/bench_dilation_path.py            # full run: 8 targets x 8 methods x 5 seeds
python benchmarks/bench_dilation_path.py --quick    # seconds-long smoke run
python benchmarks/bench_dilation_path.py --help
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, for `benchmarks.dilation`

from benchmarks.dilation.run import main  # noqa: E402

if __name__ == "__main__":
    main()
