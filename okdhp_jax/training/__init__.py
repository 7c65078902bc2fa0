"""Training: loss terms, optimiser, train state, the sharded train step and the loop.

  losses.py     JointsMSE, pixel-wise KL, KD ramp: the terms methods combine (okdhp_jax/methods/).
  optimizer.py  Adam with step decay; epochs -> steps.
  state.py      the TrainState pytree and its creation.
  step.py       the jitted train step, one for every method.
  loop.py       Trainer and train_and_evaluate: data, steps, logging, evaluation, checkpoints.
"""
