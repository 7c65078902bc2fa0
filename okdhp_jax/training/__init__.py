"""Training's building blocks: optimiser, train state, the sharded train step, stop guards.

  optimizer.py  Adam with step decay; epochs -> steps.
  state.py      the TrainState pytree and its creation.
  flat_state.py the same state as one vector per dtype, as a GPU keeps it between steps.
  step.py       the jitted train step, one for every method.
  guards.py     what stops a run: non-finite or diverging losses, SIGTERM.

The loop that drives them is okdhp_jax/experiment/train_loop.py; the losses are the methods'.
"""
