"""notebooks/quickstart.ipynb runs headless, top to bottom, so it cannot rot.

No Jupyter at test time: the notebook's JSON is checked for the nbformat-4 structure
Jupyter writes (and for no stored outputs), and its code cells are ``exec``-ed in
order in one namespace, each compiled under a filename naming its cell, with
matplotlib's Agg backend and the cwd at the repository root. The cell tagged
``parameters`` runs first as written, then the test's values replace its variables
(as papermill injects them): a few steps of a tiny model in a temporary workdir.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, TINY_VAE

NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"
CELL_TYPES = {"markdown", "code", "raw"}
# A few steps of the tests' tiny VAE; the notebook sets the steps itself.
TINY_OVERRIDES = {k: v for k, v in TINY_VAE.items() if k != "train.num_steps"}


def nbformat4_problems(nb: object) -> list[str]:
    """What keeps ``nb`` (a notebook's parsed JSON) from being an nbformat-4 notebook
    stored without outputs, with one code cell tagged ``parameters``; empty if nothing."""
    if not isinstance(nb, dict):
        return [f"top level is a {type(nb).__name__}, not an object"]
    problems = []
    if nb.get("nbformat") != 4 or not isinstance(nb.get("nbformat_minor"), int):
        problems.append(f"nbformat {nb.get('nbformat')!r}.{nb.get('nbformat_minor')!r}, not 4.x")
    if not isinstance(nb.get("metadata"), dict):
        problems.append("no metadata object")
    cells = nb.get("cells")
    if not isinstance(cells, list) or not cells:
        return [*problems, "no cells"]
    minor = nb.get("nbformat_minor") if isinstance(nb.get("nbformat_minor"), int) else 0
    ids = []
    for i, cell in enumerate(cells):
        where = f"cell {i}"
        if not isinstance(cell, dict) or cell.get("cell_type") not in CELL_TYPES:
            problems.append(f"{where}: not a cell of a type in {sorted(CELL_TYPES)}")
            continue
        source = cell.get("source")
        if not (isinstance(source, str) or (isinstance(source, list)
                                            and all(isinstance(s, str) for s in source))):
            problems.append(f"{where}: source is not a string or a list of strings")
        if not isinstance(cell.get("metadata"), dict):
            problems.append(f"{where}: no metadata object")
        if minor >= 5:  # cell ids arrived in nbformat 4.5
            ids.append(cell.get("id"))
            if not (isinstance(cell.get("id"), str) and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", cell["id"])):
                problems.append(f"{where}: id {cell.get('id')!r} is not 1-64 of [A-Za-z0-9_-]")
        if cell["cell_type"] == "code":
            if cell.get("outputs") != []:
                problems.append(f"{where}: outputs are stored (clear them: Kernel > Restart & Clear Output)")
            if "execution_count" not in cell or cell["execution_count"] is not None:
                problems.append(f"{where}: execution_count is {cell.get('execution_count', 'missing')!r}, "
                                "not null")
            magic = [ln for ln in _lines(cell) if ln.lstrip().startswith(("%", "!"))]
            if magic:
                problems.append(f"{where}: IPython syntax {magic[0].strip()!r} (the test runs plain Python)")
        elif "outputs" in cell or "execution_count" in cell:
            problems.append(f"{where}: a {cell['cell_type']} cell with outputs or execution_count")
    if len(set(ids)) != len(ids):
        problems.append("cell ids are not unique")
    tagged = [i for i, c in enumerate(cells) if isinstance(c, dict)
              and "parameters" in (c.get("metadata") or {}).get("tags", [])]
    code = [i for i, c in enumerate(cells) if isinstance(c, dict) and c.get("cell_type") == "code"]
    if len(tagged) != 1 or not code or tagged[0] != code[0]:
        problems.append(f"need exactly one cell tagged 'parameters', the first code cell; tagged: {tagged}")
    return problems


def _lines(cell: dict) -> list[str]:
    source = cell.get("source", "")
    return "".join(source).splitlines() if isinstance(source, list) else source.splitlines()


def load_notebook(path: Path = NOTEBOOK) -> dict:
    """The notebook's JSON, failing the test on any :func:`nbformat4_problems`."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    problems = nbformat4_problems(nb)
    assert not problems, f"{path.name}: " + "; ".join(problems)
    return nb


def run_code_cells(nb: dict, params: dict, name: str = NOTEBOOK.name, namespace: dict | None = None) -> dict:
    """Executes ``nb``'s code cells in order in one namespace; ``params`` replace the
    parameters cell's variables after it runs (each must be one it defines)."""
    ns = {"__name__": "__main__"} if namespace is None else namespace
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        exec_cell(nb, i, ns, name)
        if "parameters" in cell["metadata"].get("tags", []):
            unknown = sorted(set(params) - set(ns))
            assert not unknown, f"{name}: the parameters cell defines no {unknown}"
            ns.update(params)
    return ns


def exec_cell(nb: dict, i: int, ns: dict, name: str = NOTEBOOK.name) -> None:
    """Runs cell ``i`` in ``ns``; a traceback names the cell (``<quickstart.ipynb cell 7>``)."""
    source = "".join(nb["cells"][i]["source"])
    exec(compile(source, f"<{name} cell {i}>", "exec"), ns)


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook run once with the test's parameters: (notebook, namespace, params)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    nb = load_notebook()
    params = {"WORKDIR": str(tmp_path_factory.mktemp("quickstart") / "run"), "NUM_STEPS": 6,
              "NUM_SAMPLES": 16, "LOG_PROB_SAMPLES": 4, "OVERRIDES": TINY_OVERRIDES}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)  # as Jupyter started at the repository root
        ns = run_code_cells(nb, params)
    yield nb, ns, params
    plt.close("all")


def test_notebook_runs_every_cell_with_the_parameters(executed):
    nb, ns, params = executed
    workdir = Path(params["WORKDIR"])
    # the parameters reached the run: its steps, its workdir, its sample count, the tiny model
    assert int(ns["state"].step) == params["NUM_STEPS"]
    assert (workdir / "checkpoints").is_dir() and (workdir / "metrics.jsonl").is_file()
    assert ns["config"].model.latent_dim == TINY_OVERRIDES["model.latent_dim"]
    assert ns["samples"].shape == (params["NUM_SAMPLES"], 8, 8, 1)
    # the plotted curve is the file's, and the likelihood is the mean over the whole test split
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if r["split"] == "train"]
    np.testing.assert_array_equal(ns["curves"]["train"][0], train_steps)
    assert len(ns["nats"]) == len(ns["x_test"]) > ns["config"].data.batch_size
    assert np.isfinite(ns["bpd"])


def test_notebook_restore_check_fails_for_a_different_state(executed, monkeypatch):
    """The notebook's restore cell is a real check: given another state it raises."""
    import jax

    nb, ns, _ = executed
    restore_cell = next(i for i, c in enumerate(nb["cells"])
                        if c["cell_type"] == "code" and "train.restore(" in "".join(c["source"]))
    real_restore = ns["train"].restore

    def perturbed_restore(*args, **kwargs):
        state = real_restore(*args, **kwargs)
        return state.replace(params=jax.tree.map(lambda p: p * 1.01, state.params),
                             ema_params=jax.tree.map(lambda p: p * 1.01, state.ema_params))

    monkeypatch.setattr(ns["train"], "restore", perturbed_restore)
    with pytest.raises(AssertionError, match="same samples"):
        exec_cell(nb, restore_cell, dict(ns))


def test_nbformat_check_catches_stored_outputs_and_a_missing_parameters_cell():
    nb = load_notebook()
    code = next(i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code")
    for spoil in (lambda c: c.update(outputs=[{"output_type": "stream", "name": "stdout", "text": "1\n"}]),
                  lambda c: c.update(execution_count=3),
                  lambda c: c["metadata"].update(tags=[]),
                  lambda c: c.update(source=["%matplotlib inline\n", "x = 1"]),
                  lambda c: c.update(id="no spaces allowed")):
        bad = json.loads(json.dumps(nb))
        spoil(bad["cells"][code])
        assert nbformat4_problems(bad), spoil
    assert nbformat4_problems({**nb, "nbformat": 3})
    assert nbformat4_problems([nb])


def test_a_raising_cell_is_named(tmp_path):
    nb = load_notebook()
    bad = json.loads(json.dumps(nb))
    last = max(i for i, c in enumerate(bad["cells"]) if c["cell_type"] == "code")
    bad["cells"][last]["source"] = ["x = 1\n", "gen_jax_no_such_name"]
    with pytest.raises(NameError) as info:
        exec_cell(bad, last, {})
    assert info.traceback[-1].frame.code.raw.co_filename == f"<{NOTEBOOK.name} cell {last}>"
