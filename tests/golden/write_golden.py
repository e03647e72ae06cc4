"""Write tests/golden/demo_metrics.json from a finished demo run: python tests/golden/write_golden.py [CHECKOUT].

The workflow test compares the demo's numbers with this file exactly; rewrite it only on purpose (a
bug fix, a better default) and give the reason in the commit message.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_demo_run import GOLDEN, demo_numbers  # noqa: E402

root = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
numbers = demo_numbers(root)
if not numbers:
    sys.exit(f"error: {root}/results/metrics holds no synthetic.json; run the demo first (make demo)")
GOLDEN.write_text(json.dumps(numbers, indent=1, sort_keys=True) + "\n", encoding="utf-8")
print(f"{GOLDEN}: {len(numbers)} method x similarity entries")
