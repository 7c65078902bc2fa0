"""Training methods: OKDHP (also the plain baseline, with one branch) and FPD, by config.method.

  base.py   the Method interface, Targets, and the registry (`register`, `create`).
  losses.py the loss terms the methods combine: JointsMSE, pixel-wise KL, the KD ramp.
  okdhp.py  OKDHP's objective: MSE on every stack + ensemble MSE + ramped pixel-wise KL.
  fpd.py    FPD: a plain student distilled from a frozen, exported teacher.
"""

from okdhp_jax.methods import fpd, okdhp  # registers the built-in methods.
from okdhp_jax.methods.base import (Method, Metrics, Targets, create, get_method, register,
                                    registered_names)

__all__ = ['Method', 'Metrics', 'Targets', 'create', 'fpd', 'get_method', 'okdhp', 'register',
           'registered_names']
