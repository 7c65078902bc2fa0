"""Training methods: OKDHP (also the plain baseline, with one branch) and FPD, by config.trainer.

  base.py   the Method interface, Targets, and the registry (`register`, `create`).
  okdhp.py  OKDHP's objective: MSE on every stack + ensemble MSE + ramped pixel-wise KL.
  fpd.py    FPD: a plain student distilled from a frozen, exported teacher.
"""

from okdhp_jax.methods import fpd, okdhp  # registers the built-in methods.
from okdhp_jax.methods.base import Method, Metrics, Targets, create, register, registered_names

__all__ = ['Method', 'Metrics', 'Targets', 'create', 'fpd', 'okdhp', 'register',
           'registered_names']
