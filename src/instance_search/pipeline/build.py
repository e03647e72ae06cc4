"""Building an index: extract (local features with positions), codebook (the method's model), encode.

Each is a function of files: it reads its inputs, computes, and writes atomically. Part jobs
(``compute.parts``: {dataset: n}) split extraction, and the bags of words' encoding, into n jobs
whose folders the whole step then gathers into the same bytes one job writes.
"""

from __future__ import annotations

from pathlib import Path

from .. import groundtruth, methods
from ..devices import runs_on_gpu
from ..errors import InstanceSearchError
from ..hashing import sha256_file
from ..index import extraction_settings, write
from ..io import load_npz, save_npz
from ..methods.base import EncodesInParts
from .declare import PathLike, step



def n_parts(params: dict, dataset: str) -> int:
    return int(params["compute"].get("parts", {}).get(dataset, 1))


def _folders(params: dict, dataset: str, parts: PathLike) -> list[Path]:
    n = n_parts(params, dataset)
    return [Path(parts) / f"{i}-of-{n}" for i in range(n)]


def _extraction_gpu(params: dict, w: dict) -> int:
    return int(methods.extraction(w["method"]).uses_gpu)


def _codebook_gpu(params: dict, w: dict) -> int:
    """A codebook whose device resolves to CUDA assigns the words there too (encode)."""
    return int(runs_on_gpu(params[w["method"]]["codebook"].get("device", "cpu")))


def _split(params: dict, w: dict) -> bool:
    return n_parts(params, w["dataset"]) > 1


def _encoded_in_parts(params: dict, w: dict) -> bool:
    return _split(params, w) and isinstance(methods.indexing(w["method"]), EncodesInParts)


GND = "normalised ground truth (prepare step)"
FEATURES = "feature folder (extract step)"


@step(inputs={"gnd": GND}, outputs={"features": "part folder of the features"},
      wildcards=("method", "part", "of"), params=("compute.threads", "{method}.extract"), compute=True,
      gpu=_extraction_gpu, method_code="extraction")
def extract_part(params: dict, method: str, gnd: PathLike, features: PathLike, part: int, of: int) -> None:
    """Local features of part ``part`` of ``of`` of the images, into a part folder (a cluster job)."""
    methods.extraction(method).extract(params[method]["extract"], groundtruth.load(gnd), Path(features),
                                       part=(part, of))


@step(inputs={"gnd": GND, "parts": "folder of the part jobs' folders, gathered instead of extracting"},
      outputs={"features": "feature folder"}, wildcards=("dataset", "method"),
      params=("compute.threads", "{method}.extract"), compute=True, gpu=_extraction_gpu, gathers=_split,
      method_code="extraction", optional=("parts",))
def extract(params: dict, dataset: str, method: str, gnd: PathLike, features: PathLike,
            parts: PathLike | None = None) -> None:
    """Local features (with positions) of every image of the ground truth: database and query-only."""
    ex, g, p = methods.extraction(method), groundtruth.load(gnd), params[method]["extract"]
    if parts:
        ex.gather(p, g, _folders(params, dataset, parts), Path(features))
    else:
        ex.extract(p, g, Path(features))


@step(inputs={"gnd": GND, "features": FEATURES}, outputs={"model": "model.npz"}, wildcards=("method",),
      params=("compute.threads", "seed", "{method}.codebook"), compute=True, gpu=_codebook_gpu,
      method_code="indexing")
def codebook(params: dict, method: str, gnd: PathLike, features: PathLike, model: PathLike) -> None:
    """The method's model (vocabulary, whitening), learned on the database images' features."""
    m = methods.indexing(method)
    save_npz(model, **m.learn(params[method]["codebook"], params["seed"], groundtruth.load(gnd), Path(features)))


def _device(params: dict, method: str) -> dict:
    """A codebook with a device (bags of words) assigns the words there too."""
    device = params[method]["codebook"].get("device")
    return {} if device is None else {"device": device}


@step(inputs={"gnd": GND, "features": FEATURES, "model": "model.npz (codebook step)"},
      outputs={"index": "part folder of the index"}, wildcards=("method", "part", "of"),
      params=("compute.threads", "{method}.encode"), compute=True, gpu=_codebook_gpu, method_code="indexing")
def encode_part(params: dict, method: str, gnd: PathLike, features: PathLike, model: PathLike, index: PathLike,
                part: int, of: int) -> None:
    """Part ``part`` of ``of`` of the images encoded into a part folder (methods that encode in parts)."""
    m = methods.indexing(method)
    if not isinstance(m, EncodesInParts):
        raise InstanceSearchError(f"{method} encodes in one job (its encoding is a matrix product); "
                                  "leave out --part")
    p = params[method]["encode"]
    config = {"model": sha256_file(model), "extraction": extraction_settings(features), "encoding": p}
    m.encode_part(p, groundtruth.load(gnd), Path(features), load_npz(model), (part, of), Path(index), config,
                  **_device(params, method))


@step(inputs={"gnd": GND, "features": FEATURES, "model": "model.npz (codebook step)",
              "parts": "folder of the part jobs' folders, gathered instead of encoding"},
      outputs={"index": "index folder"}, wildcards=("dataset", "method"),
      params=("compute.threads", "{method}.encode"), compute=True, gpu=_codebook_gpu, gathers=_encoded_in_parts,
      method_code="indexing", optional=("parts",))
def encode(params: dict, dataset: str, method: str, gnd: PathLike, features: PathLike, model: PathLike,
           index: PathLike, parts: PathLike | None = None) -> None:
    """The index: every image encoded with the model, into the files the method searches."""
    m, g, p = methods.indexing(method), groundtruth.load(gnd), params[method]["encode"]
    if parts:
        files = m.gather_encoded(p, g, _folders(params, dataset, parts))
    else:
        files = m.encode(p, g, Path(features), load_npz(model), **_device(params, method))
    write(index, method, files, n_images=len(g.images), n_database=g.n_database, model=model,
          extraction=extraction_settings(features), encoding=p)
