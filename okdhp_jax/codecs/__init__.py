"""Target representations: how joints become training targets and predictions become joints.

  heatmap.py  Gaussian heatmaps (HRNet / OKDHP): encode on device, decode on host, flip test.

A codec works in network-input pixels both ways and knows no crop: the data pipeline maps
joints into the crop before encoding, and evaluation and inference map decoded joints back to
image pixels (okdhp_jax/data/geometry.py). A new representation is one new module here with
the same three parts.
"""
