"""Evaluation: the predict step, the evaluation pass, MPII PCKh, COCO AP, tables, drawings.

  predict_step.py  the jitted forward pass with the flip test.
  evaluator.py     one pass over the eval split: every branch and the ensemble, scored.
  pckh.py          MPII PCKh (HRNet's formula) and gt_valid.mat / pred.mat files.
  coco_eval.py     COCO keypoint AP: rescoring, OKS-NMS (nms.py), pycocotools' COCOeval.
  report.py        the paper-style tables and the best branch.
  visualize.py     skeleton drawings and PNG files.

Decoding heatmaps to joints is the heatmap codec's (okdhp_jax/codecs/heatmap.py).
"""
