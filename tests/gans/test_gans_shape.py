"""One shape for the GAN family: every Method is an instance of the capability protocols it
claims (and of no other). The translation Methods' ``reconstruct(state, x, rng)`` shapes are
checked inside their step tests (tests/gans/test_gans_translation.py), whose compiled call
they share."""

from __future__ import annotations

import pytest
from conftest import CONFIGS

from gen_jax import load_config, registry
from gen_jax.registry import HasAnomalyScore, HasLatent, HasLogProb, HasReconstruct, Method

CLAIMS = {
    "gan_toy2d.py": set(),
    "dcgan_digits.py": set(),
    "cgan_digits.py": set(),
    "pix2pix_digits.py": {HasReconstruct},
    "cyclegan_digits.py": {HasReconstruct},
}


@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_gans_are_the_protocols_they_claim(name):
    method = registry.build(load_config(CONFIGS / name))
    assert isinstance(method, Method)
    for protocol in (HasLatent, HasReconstruct, HasAnomalyScore, HasLogProb):
        assert isinstance(method, protocol) == (protocol in CLAIMS[name]), protocol.__name__
