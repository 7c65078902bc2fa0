"""Evaluation: heatmap decoding, MPII PCKh, COCO AP with OKS-NMS, branch reports, drawings."""

from okdhp_jax.evaluation.coco_eval import CocoKeypointEvaluator, load_person_boxes
from okdhp_jax.evaluation.decode import decode_heatmaps, heatmaps_to_image_coords, named_heatmaps
from okdhp_jax.evaluation.pckh import compute_pckh, load_mpii_gt, load_pred_mat, save_pred_mat
from okdhp_jax.evaluation.report import branch_report
from okdhp_jax.evaluation.visualize import draw_batch, draw_pose, draw_prediction_and_gt, save_png
