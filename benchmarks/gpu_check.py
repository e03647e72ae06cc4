"""The GPU check, ready for the first machine with CUDA: one run, one table, under 8 minutes.

1. the CUDA agreement tests (k-means and word assignment on CUDA against the CPU; CNN features on
   CUDA against the CPU's within tolerance), run by pytest;
2. ``benchmarks/codebook_device.py --device cuda`` at its default scale (1M features x 512 dims,
   25k words, 2 iterations, extrapolated to 20);
3. extraction images/s of each CNN method at params-full.yaml's settings on CUDA, over real photos
   (../shared/data/ukbench-500), after a warm-up on two of them.

It prints the GPU's name and one table (check, result, seconds). ``--dry`` runs the same three
parts on the CPU at toy sizes (the tests only collected, 8 images, a small codebook), so CI
proves the script still runs where no GPU is lent. Run from the repository root::

    python benchmarks/gpu_check.py            # a CUDA machine
    python benchmarks/gpu_check.py --dry      # anywhere
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "data" / "ukbench-500" / "jpg"
CNN_METHODS = ("blcf", "frcnn", "gem", "xfeat")
# the tests that compare CUDA with the CPU (skipped without CUDA)
CUDA_TESTS = ("tests/test_kmeans_torch.py::test_cuda_agrees_with_the_cpu",
              "tests/test_blcf.py::test_gpu_path_matches_cpu")


def _run(cmd: list[str], timeout: float) -> tuple[bool, str, float]:
    """(passed, last output line, seconds) of a command run from the repository root."""
    start = time.perf_counter()
    try:
        got = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout:.0f} s", time.perf_counter() - start
    lines = (got.stdout + got.stderr).strip().splitlines()
    return got.returncode == 0, lines[-1] if lines else "", time.perf_counter() - start


def cuda_tests(dry: bool) -> tuple[bool, str, float]:
    """The agreement tests; dry: only collected, so a renamed test fails here rather than being missed."""
    return _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                 *(["--collect-only"] if dry else []), *CUDA_TESTS], timeout=300)


def codebook(dry: bool) -> tuple[bool, str, float]:
    size = ["--device", "cpu", "--n", "20000", "--dim", "64", "--k", "100", "--iterations", "1", "--eval-n", "2000"] \
        if dry else ["--device", "cuda"]
    return _run([sys.executable, "benchmarks/codebook_device.py", *size], timeout=360)


def _offline(settings: dict) -> str:
    """Put the offline network in place of one whose weights are not on this machine: mobilenet_v2 (make
    install puts its weights there) for a backbone, frcnn's grid of windows for the COCO detector. No
    registry package carries vgg16's or the detector's weights, and the GPU machine has no network."""
    from instance_search.features import backbones

    changed = []
    if settings.get("source") == "rpn":
        settings["source"] = "grid"
        changed.append("grid windows for the rpn detector")
    if "backbone" in settings and not backbones.weight_file(settings["backbone"]).is_file():
        changed.append(f"mobilenet_v2 for {settings['backbone']}")
        settings["backbone"] = "mobilenet_v2"
        settings["layer"] = "features.18" if "layer" in settings and settings["layer"] else ""
    return f" ({', '.join(changed)}: weights absent)" if changed else ""


def extraction(method: str, dry: bool, images: int) -> tuple[bool, str, float]:
    """images/s of the method's extract step at params-full.yaml's settings (on the CPU when dry)."""
    from instance_search import groundtruth
    from instance_search.config import load_params, schema_path
    from instance_search.datasets.folder import readable_images
    from instance_search.errors import InstanceSearchError
    from instance_search.groundtruth import GroundTruth
    from instance_search.pipeline import steps

    params = copy.deepcopy(load_params(REPO / "params-full.yaml", schema_path(REPO / "params-full.yaml")))
    settings = params[method]["extract"]
    settings["device"] = "cpu" if dry else "cuda"
    if dry:  # toy sizes: the same code path, seconds on a CPU
        for key, value in (("max_side", 256), ("batch_size", 2), ("workers", 0), ("max_features", 256)):
            if key in settings:
                settings[key] = value
    listed = readable_images(PHOTOS)
    if len(listed) < images + 2:
        return False, f"{PHOTOS}: {len(listed)} images, the check needs {images + 2}", 0.0
    note = ""
    with tempfile.TemporaryDirectory() as tmp:
        seconds = []
        for name, chosen in (("warm-up", listed[:2]), ("timed", listed[2:2 + images])):
            gnd = GroundTruth(dataset=name, root=str(PHOTOS), images=chosen, n_database=len(chosen), labelled=False)
            groundtruth.save(gnd, Path(tmp) / f"{name}.json")
            start = time.perf_counter()
            try:
                steps.extract(params, name, method, Path(tmp) / f"{name}.json", Path(tmp) / name)
            except InstanceSearchError as exc:
                if "weights" not in str(exc) or note:
                    return False, str(exc).splitlines()[0], time.perf_counter() - start
                note = _offline(settings)
                steps.extract(params, name, method, Path(tmp) / f"{name}.json", Path(tmp) / name)
            seconds.append(time.perf_counter() - start)
    return True, f"{images / seconds[1]:.1f} images/s over {images} photos{note}", seconds[1]


def device_name(dry: bool) -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return "no CUDA device (dry run on the CPU)" if dry else "no CUDA device"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry", action="store_true", help="the same parts on the CPU at toy sizes (CI)")
    ap.add_argument("--images", type=int, default=None, help="photos timed per method (default 200; dry: 8)")
    args = ap.parse_args()
    images = args.images or (8 if args.dry else 200)
    name = device_name(args.dry)
    if not args.dry and name == "no CUDA device":
        print("error: no CUDA device here; run with --dry to check the script on the CPU", file=sys.stderr)
        return 1
    rows = [("CUDA agreement tests", *cuda_tests(args.dry)), ("codebook_device.py", *codebook(args.dry))]
    for method in CNN_METHODS:
        rows.append((f"extract {method} (params-full)", *extraction(method, args.dry, images)))
    print(f"\nGPU check on {name}{' (dry)' if args.dry else ''}\n")
    print(f"| check | ok | result | seconds |\n|---|---|---|---:|")
    for check, ok, result, seconds in rows:
        print(f"| {check} | {'yes' if ok else 'NO'} | {result.replace('|', '/')} | {seconds:.1f} |")
    return 0 if all(ok for _, ok, _, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
