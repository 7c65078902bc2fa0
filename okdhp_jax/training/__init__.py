"""Training: targets, the OKDHP losses, optimiser, train state, sharding, train/predict steps.

  targets.py    GT heatmaps and target weights, rendered on device.
  losses.py     JointsMSE, pixel-wise KL, KD ramp, the OKDHP total loss (the method).
  optimizer.py  Adam with step decay; epochs -> steps.
  state.py      TrainState pytree, shape-first creation, Orbax restore target.
  sharding.py   the `data` mesh and its shardings.
  step.py       the jitted train step (OKDHP, and the plain baseline).
  inference.py  the jitted predict step with flip test.
  fpd.py        the FPD trainer variant (frozen exported teacher).
"""
