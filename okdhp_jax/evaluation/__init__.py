"""Evaluation: the predict step, the evaluation pass, metric objects, tables, drawings.

  predict_step.py  the jitted forward pass with the flip test.
  evaluator.py     one pass over the eval split: every branch and the ensemble, in image pixels,
                   scored by the dataset's metric.
  metrics.py       the Metric interface and registry; DatasetMeta.metric picks one.
  pckh.py          MPII PCKh (HRNet's formula), gt_valid.mat / pred.mat files, metric 'pckh'.
  coco_eval.py     COCO keypoint AP: rescoring, OKS-NMS (nms.py), pycocotools' COCOeval,
                   metric 'coco_ap'.
  report.py        the paper-style tables and the best branch.
  visualize.py     skeleton drawings and PNG files.

Decoding heatmaps to joints in input pixels is the heatmap codec's (okdhp_jax/codecs/heatmap.py);
the evaluation takes them back to image pixels through the crop (okdhp_jax/data/geometry.py).
"""

from okdhp_jax.evaluation import coco_eval, pckh  # registers the built-in metrics.
