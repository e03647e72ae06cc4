"""The libraries' CPU kernels are capped at AVX2 (kernels.pin), so the bytes do not follow the CPU model."""

import json
import os
import subprocess
import sys

from instance_search import kernels

PROBE = """
import json, os
import instance_search, cv2, faiss, torch
print(json.dumps({"faiss": faiss.get_compile_options(), "torch": torch.backends.cpu.get_cpu_capability(),
                  "env": {k: os.environ.get(k) for k in %r}}))
"""


def _probe(env: dict) -> dict:
    got = subprocess.run([sys.executable, "-c", PROBE % (list(kernels.CAPS),)], env=env, capture_output=True,
                         text=True, timeout=300)
    assert got.returncode == 0, got.stderr[-2000:]
    assert "OPENCV: Trying to disable" not in got.stderr  # no feature named that the CPU lacks
    return json.loads(got.stdout.strip().splitlines()[-1])


def test_importing_the_package_caps_faiss_torch_and_opencv_at_avx2():
    env = {k: v for k, v in os.environ.items() if k not in kernels.CAPS and k != "OPENCV_CPU_DISABLE"}
    got = _probe(env)
    assert got["env"] == kernels.CAPS
    assert "AVX512" not in got["faiss"].upper() and "AVX2" in got["faiss"]
    assert "AVX512" not in got["torch"].upper()


def test_a_value_already_in_the_environment_is_kept():
    env = {k: v for k, v in os.environ.items() if k not in kernels.CAPS}
    got = _probe({**env, "ATEN_CPU_CAPABILITY": "default"})
    assert got["env"]["ATEN_CPU_CAPABILITY"] == "default" and got["torch"] == "DEFAULT"


def test_opencv_is_told_only_the_avx512_features_the_cpu_has():
    assert kernels.opencv_disabled({"sse4_2", "avx2", "fma"}) == ""
    value = kernels.opencv_disabled({"avx2", "avx512f", "avx512bw", "avx512_vnni"}).split(",")
    assert value[:3] == ["AVX512F", "AVX512BW", "AVX512VNNI"] and "AVX512-SKX" in value
    assert "AVX512CD" not in value  # absent from the flags: OpenCV would warn about it
