"""`python -m gen_jax`: the command-line entry point (see gen_jax/main.py)."""

from gen_jax.main import run

if __name__ == "__main__":
    run()
