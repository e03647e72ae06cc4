"""make drift: what the newest releases that pyproject.toml's ranges admit would change.

A throw-away clone of this checkout's HEAD (build/drift/) locks the newest releases (make lock),
installs them (make install) and runs the demo (make demo); then this prints which package versions
differ from requirements.lock and which of the demo's numbers move against the golden file, and by
how much. It reports; it does not fail (exit 0 once the demo has run). Takes as long as install + demo.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))
from instance_search import versions  # noqa: E402
from test_demo_run import GOLDEN, demo_numbers  # noqa: E402

CLONE = REPO / "build" / "drift"


def run(*cmd: str, cwd: Path) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=cwd, check=True)


def main() -> None:
    shutil.rmtree(CLONE, ignore_errors=True)
    run("git", "clone", "--quiet", str(REPO), str(CLONE), cwd=REPO)
    run("make", "lock", cwd=CLONE)
    try:
        run("make", "install", cwd=CLONE)
    except subprocess.CalledProcessError:  # seen once: pip did not yet list a release of two days before
        print("make install failed; trying once more", flush=True)
        run("make", "install", cwd=CLONE)
    run("make", "demo", cwd=CLONE)

    locked, newest = versions.read_lock(REPO / "requirements.lock"), versions.read_lock(CLONE / "requirements.lock")
    changed = versions.lock_differences(locked, newest)
    print(f"\npackages: {len(changed)} of {len(locked)} locked differ from the newest releases the ranges admit")
    for line in changed:  # lock_differences speaks of an installed environment: here, the newest lock
        print("  " + line.replace("not installed", "dropped by the newest resolution")
              .replace("installed, not in the lock", "newly needed").replace(" installed", " newest"))
    byte_deciding = [f"{n} {locked.get(n)} -> {newest.get(n)}" for n in versions.BYTE_DECIDING
                     if locked.get(n) != newest.get(n)]
    print("  byte-deciding: " + ("; ".join(byte_deciding) or "none differs"))

    golden, got = json.loads(GOLDEN.read_text(encoding="utf-8")), demo_numbers(CLONE)
    moves, same = [], 0
    for run_name in sorted(golden):
        for stage in sorted(golden[run_name]):
            for key, value in sorted(golden[run_name][stage].items()):
                new = got.get(run_name, {}).get(stage, {}).get(key)
                if new == value:
                    same += 1
                else:
                    moves.append((abs(new - value) if new is not None else float("inf"), run_name, stage, key, value, new))
    print(f"\ndemo numbers: {len(moves)} of {len(moves) + same} move against {GOLDEN.relative_to(REPO)}")
    print(f"  {'run':<24} {'stage':<12} {'metric':<10} {'golden':>7} {'newest':>7} {'change':>8}")
    for _, run_name, stage, key, value, new in sorted(moves, key=lambda m: (m[1], m[2], m[3])):
        change = f"{new - value:+.4f}" if new is not None else "missing"
        print(f"  {run_name:<24} {stage:<12} {key:<10} {value:>7.4f} {new if new is not None else '-':>7} {change:>8}")
    if moves:
        print(f"  largest change: {max(m[0] for m in moves):.4f}")


if __name__ == "__main__":
    main()
