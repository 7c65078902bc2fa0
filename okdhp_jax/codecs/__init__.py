"""Target representations: how joints become training targets and predictions become joints.

  heatmap.py  Gaussian heatmaps (HRNet / OKDHP): encode on device, decode on host, flip test.

A new representation is one new module here with the same three parts.
"""
