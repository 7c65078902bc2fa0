"""The Python inference API: an export loaded once, many people predicted per device call.

  from okdhp_jax.inference import PosePredictor
  predictor = PosePredictor.from_export('runs/hg4/export', batch_size=32)
  result = predictor.predict('person.jpg', boxes=[[10, 20, 200, 400]])
  results = predict_detections(predictor, 'dets.json', 'val2017/')  # COCO keypoint results
  predictor.predict_video('in.mp4', 'out.mp4', boxes=[[10, 20, 200, 400]])  # followed

predictor.py batches and runs the network, images.py opens images and crops people as the
evaluation does, detections.py turns a COCO detections file into COCO keypoint results,
video.py follows people through a video frame by frame.
"""

from okdhp_jax.inference.detections import predict_detections
from okdhp_jax.inference.predictor import PosePredictor, PoseResult
from okdhp_jax.inference.video import FollowRule, VideoReader, predict_video

__all__ = ['FollowRule', 'PosePredictor', 'PoseResult', 'VideoReader', 'predict_detections',
           'predict_video']
