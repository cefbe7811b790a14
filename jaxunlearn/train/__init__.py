"""The jit boundary: compiled epochs, training loops, oracle models, shadows.

Everything in ``jaxunlearn`` outside this package (and the CLI / drivers) is
pure and un-jitted. One module per job:

* ``_engine``: the compiled epoch (``EpochRunner``: ``lax.scan``, a device-side
  step loop, or replicas one after another), meshes, input validation and
  batched ``predict``;
* ``_loops``: ``unlearn``, ``fit`` and ``unlearn_replicas`` over the engine;
* ``_rounds``: sequential deletion requests (``unlearn_rounds``);
* ``_oracle``: the cached original and retrained models;
* ``_shadow``: shadow ensembles (``train_models``, LiRA / U-LiRA shadows);
* ``_sweep``: hyperparameter sweeps as one vmapped program, selected against
  the retrained model (``sweep``).

Batches are gathered on device from fixed index plans, so no shape ever
changes. With a mesh, the batch axis is sharded over the ``"data"`` axis and
the state is replicated, and vmapped replicas over a ``"replica"`` axis
(``make_mesh(shape={"replica": r, "data": d})`` does both): the same program
runs on one CPU, several simulated CPU devices, several GPUs or several hosts
(``initialize_distributed``; see docs/scale_out.md).
"""

from jaxunlearn import optim
from jaxunlearn.train._engine import (
    ENGINE_VERSION,
    MODES,
    EpochRunner,
    initialize_distributed,
    make_mesh,
    predict,
)
from jaxunlearn.train._loops import (
    TrainConfig,
    UnlearnResult,
    fit,
    unlearn,
    unlearn_replicas,
)
from jaxunlearn.train._oracle import retrain, train_original
from jaxunlearn.train._rounds import (
    RoundsResult,
    forget_rounds,
    unlearn_rounds,
)
from jaxunlearn.train._shadow import (
    ShadowResult,
    ULiraShadows,
    train_models,
    train_shadow_models,
    ulira_shadows,
)
from jaxunlearn.train._sweep import (
    SelectionRule,
    SweepResult,
    grid_points,
    sweep,
    sweepable,
)

__all__ = [
    "ENGINE_VERSION",
    "MODES",
    "EpochRunner",
    "TrainConfig",
    "UnlearnResult",
    "fit",
    "forget_rounds",
    "initialize_distributed",
    "make_mesh",
    "make_optimizer",
    "predict",
    "retrain",
    "RoundsResult",
    "SelectionRule",
    "ShadowResult",
    "SweepResult",
    "sweep",
    "sweepable",
    "grid_points",
    "train_models",
    "train_original",
    "train_shadow_models",
    "unlearn",
    "unlearn_replicas",
    "unlearn_rounds",
    "ULiraShadows",
    "ulira_shadows",
]

make_optimizer = optim.sgd
