"""D's mean score on 10 batches of 32 distinct real test crops against 10 batches of 32
copies of one crop, for trained GAN workdirs (does D penalise a batch without diversity?).

    python bncheck.py WORKDIR ...
"""

import sys

import jax.numpy as jnp
import ml_collections
import numpy as np

from gen_jax.checkpoint import load_trained
from gen_jax.data import bundled

if __name__ == "__main__":
    data = ml_collections.ConfigDict({"name": "patches", "num_eval": 500, "num_train": 20000})
    src = bundled.patches_source(data, "test")
    x = jnp.asarray(src.get(np.arange(320))[0], jnp.float32) / 127.5 - 1
    for workdir in sys.argv[1:]:
        method, state, config = load_trained(workdir)
        d = state.d

        def score(batch, method=method, d=d):
            return float(np.asarray(method._d(d.params, d.model_state, batch, None)[0]).mean())

        distinct = np.mean([score(x[i * 32:(i + 1) * 32]) for i in range(10)])
        copies = np.mean([score(jnp.repeat(x[i * 32][None], 32, 0)) for i in range(10)])
        print(f"{workdir} (d_norm={config.model.d_norm}): mean D over 10 batches of 32 distinct "
              f"test crops {distinct:.3f}; over 10 batches of 32 copies of one crop {copies:.3f}")
