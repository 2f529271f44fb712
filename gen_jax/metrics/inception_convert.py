"""Converts pytorch-fid's FID Inception weights to the .npz that gen_jax reads.

Run on a machine with PyTorch (only ``torch.load`` is used; pytorch-fid itself
is not needed)::

    wget https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
    python -m gen_jax.metrics.inception_convert pt_inception-2015-12-05-6726825d.pth fid_inception.npz

then pass ``--config.eval.inception_path=/path/to/fid_inception.npz``. The
.npz holds one array per Flax variable, keyed ``params/Mixed_5b/branch1x1/conv/kernel``
etc. (about 95 MB).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

import numpy as np

# PyTorch BatchNorm -> Flax BatchNorm (collection, name).
_BN = {"weight": ("params", "scale"), "bias": ("params", "bias"),
       "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


def convert_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Maps a pytorch-fid ``FIDInceptionA/C/E`` InceptionV3 state dict to flat Flax variables.

    Conv weights go from (out, in, kh, kw) to (kh, kw, in, out), the final
    linear layer's from (out, in) to (in, out); BatchNorm's weight/bias become
    scale/bias and its running statistics ``batch_stats`` mean/var.

    Args:
      state_dict: name -> array (torch tensors converted with ``.numpy()``).

    Returns:
      "collection/module/.../leaf" -> float32 array, for
      :func:`gen_jax.metrics.inception.load_inception_variables`.

    Raises:
      ValueError: a key that belongs to no layer of the FID network.
    """
    out: dict[str, np.ndarray] = {}
    for key, value in state_dict.items():
        value = np.asarray(value)
        *modules, kind, leaf = key.split(".") if key.count(".") >= 2 else ("", *key.split("."))
        modules = [m for m in modules if m]
        if leaf == "num_batches_tracked" or modules[:1] == ["AuxLogits"]:
            continue  # training-time bookkeeping / the unused auxiliary head
        if kind == "conv" and leaf == "weight":
            out["/".join(["params", *modules, "conv", "kernel"])] = value.transpose(2, 3, 1, 0)
        elif kind == "bn" and leaf in _BN:
            collection, name = _BN[leaf]
            out["/".join([collection, *modules, "bn", name])] = value
        elif kind == "fc" and not modules and leaf in ("weight", "bias"):
            if leaf == "weight":
                out["params/fc/kernel"] = value.T
            else:
                out["params/fc/bias"] = value
        else:
            raise ValueError(f"unexpected key {key!r} in the state dict: is this pytorch-fid's "
                             "FID Inception?")
    return {k: v.astype(np.float32) for k, v in out.items()}


def main(argv: list[str]) -> None:
    if len(argv) != 3:
        raise SystemExit(f"usage: python -m gen_jax.metrics.inception_convert IN.pth OUT.npz\n{__doc__}")
    import torch  # only here: the rest of gen_jax never needs PyTorch

    state = torch.load(argv[1], map_location="cpu")
    flat = convert_state_dict({k: v.numpy() for k, v in state.items()})
    with open(argv[2], "wb") as f:
        np.savez(f, **flat)
    from gen_jax.metrics.inception import load_inception_variables

    load_inception_variables(argv[2])  # checks every array's name and shape
    print(f"wrote {len(flat)} arrays to {argv[2]}")


if __name__ == "__main__":
    main(sys.argv)
