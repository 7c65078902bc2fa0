r"""Defaults shared by every experiment: OKDHP-HG4 (balanced, released FAU) on MPII.

Every other config imports `get_config` from here and changes only what differs. Run:

  python -m okdhp_jax.main --config configs/default.py --workdir /tmp/okdhp_default

The argument string (after `:`) is a comma-separated list of flags; `runlocal` shrinks the
model, batch, steps and data to the bundled samples so the config runs on a laptop CPU.
"""

import ml_collections


def parse_args(arg: str | None) -> set[str]:
  """'runlocal,foo' -> {'runlocal', 'foo'}."""
  return {a.strip() for a in (arg or '').split(',') if a.strip()}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = parse_args(arg)
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.trainer = 'okdhp'  # okdhp_jax/methods/: 'okdhp' (also the plain baseline) | 'fpd'

  # ---------------------------------------------------------------- model
  config.model = ml_collections.ConfigDict()
  # 'hourglass' (stacked hourglass, possibly multi-branch) or 'mobilepose'.
  config.model.name = 'hourglass'
  config.model.num_shared_stacks = 2     # OKDHP shares the first N/2 stacks.
  config.model.branch_stacks = (2, 2, 2)  # private stacks per branch; (N,) with 0 shared = plain.
  config.model.features = 256
  config.model.depth = 4
  config.model.fau = 'released'          # 'released' | 'paper' | 'none'
  config.model.fau_hidden = 64
  config.model.backbone = 'resnet18'     # MobilePose only: resnet18 | mobilenetv2 | shufflenetv2
  # Compute dtype. 'auto': bfloat16 on GPU and TPU, float32 on CPU; parameters, optimiser state,
  # BatchNorm statistics, softmaxes and losses stay float32 (param_dtype, okdhp_jax/precision.py).
  config.model.dtype = 'auto'
  config.model.param_dtype = 'float32'

  # ---------------------------------------------------------------- data
  config.data = ml_collections.ConfigDict()
  config.data.dataset = 'mpii'           # 'mpii' | 'coco' (selects okdhp_jax.data.meta)
  # Build records_dir on first use: 'mpii' or 'coco' from the samples bundled in
  # data_prep/samples, 'synthetic' from generated figures (config.data.synthetic).
  config.data.bundled = ''
  config.data.synthetic = ml_collections.ConfigDict()
  config.data.synthetic.num_train = 2048
  config.data.synthetic.num_valid = 128
  config.data.synthetic.image_size = 128
  config.data.synthetic.clutter = False  # True: textured backgrounds and occluders.
  # How hard the figures are (data_prep/synthetic.py `Difficulty`; these defaults change nothing):
  # figures per image (the labelled target + distractors), the chance a distractor stands in
  # front of the target, occluders tried (each with occluder_prob; clutter only), background
  # shapes at most, torso lean spread (degrees), target height / image side.
  config.data.synthetic.num_figures = 1
  config.data.synthetic.front_prob = 0.5
  config.data.synthetic.occluders = 1
  config.data.synthetic.occluder_prob = 0.35
  config.data.synthetic.background_shapes = 5
  config.data.synthetic.lean_std = 12.0
  config.data.synthetic.height_range = (0.55, 0.95)
  # Folder of TFRecords written by data_prep (train-*.tfrecord, valid-*.tfrecord).
  config.data.records_dir = 'data/mpii_records'
  config.data.train_split = 'train'
  config.data.eval_split = 'valid'
  # MPII: gt_valid.mat for PCKh. COCO: person_keypoints_val2017.json for AP.
  config.data.eval_annotations = 'data/mpii_records/gt_valid.mat'
  config.data.num_train_examples = 22246  # sets epochs -> steps; checked against the records.
  config.data.input_size = (256, 256)     # (height, width)
  config.data.heatmap_size = (64, 64)     # (height, width)
  config.data.sigma = 2.0
  config.data.scale_factor = 0.25
  config.data.rotation_factor = 30.0
  config.data.rotation_prob = 0.6
  config.data.flip = True
  config.data.half_body_prob = 0.0
  config.data.half_body_min_joints = 8
  # JPEG windows are decoded at 1/2, 1/4 or 1/8 of their size when the crop shrinks them that
  # much anyway (okdhp_jax/data/crop.py); 1 decodes every image at full size.
  config.data.max_decode_reduction = 8
  config.data.shuffle_buffer = 4096
  config.data.prefetch = 2
  config.data.num_parallel_calls = -1    # tf.data.AUTOTUNE
  # A damaged shard: 'stop' the run naming it (the last good checkpoint stays), or 'skip' the
  # damaged end of each shard, checked when training starts (okdhp_jax/data/shard_check.py).
  config.data.on_corrupt_record = 'stop'
  # COCO test-time boxes: '' uses GT boxes; else a detection json in COCO results format.
  config.data.detections = ''
  config.data.det_score_threshold = 0.0

  # ---------------------------------------------------------------- loss
  config.loss = ml_collections.ConfigDict()
  config.loss.use_target_weight = True
  config.loss.ensemble_weight = 1.0
  config.loss.kd_weight = 2.0
  config.loss.kd_temperature = 1.0
  config.loss.kd_ramp_epochs = 90.0      # ramp = exp(-5 (1 - min(e, L)/L)^2)
  # e = step / steps_per_epoch (smooth). True: e = the integer epoch, as the released code (the
  # ramp then steps once per epoch; the smooth one is up to 12 % higher late in epoch 0).
  config.loss.kd_ramp_integer_epoch = False
  config.loss.stop_gradient_teacher = False  # the released code lets gradients reach the teacher.

  # ---------------------------------------------------------------- optimiser
  config.optim = ml_collections.ConfigDict()
  config.optim.learning_rate = 2.5e-4
  config.optim.weight_decay = 0.0
  config.optim.lr_decay_epochs = (90, 120)
  config.optim.lr_decay_factor = 0.1
  # lr *= global_batch / base_batch_size when True.
  config.optim.scale_lr_with_batch = False
  config.optim.base_batch_size = 16

  # ---------------------------------------------------------------- training loop
  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 16           # global batch, split over all devices.
  config.train.num_epochs = 150
  config.train.log_every_steps = 50
  config.train.eval_every_epochs = 10
  config.train.checkpoint_every_steps = 1000
  config.train.keep_checkpoints = 3
  config.train.num_images_to_draw = 4
  # Stop (keeping the last good checkpoint) when a checked loss exceeds this many times the
  # median of the last `divergence_window` checked losses; 0 turns the check off.
  config.train.divergence_factor = 100.0
  config.train.divergence_window = 20

  # ---------------------------------------------------------------- evaluation
  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 32
  config.eval.flip_test = True
  config.eval.shift_heatmap = True
  config.eval.pckh_threshold = 0.5
  config.eval.hrnet_mean_at_0_11 = False  # report HRNet's Mean@0.1 (taken at 0.11) instead.
  config.eval.oks_nms_threshold = 0.9
  config.eval.soft_nms = False
  config.eval.keypoint_score_threshold = 0.2

  # ---------------------------------------------------------------- export
  config.export = ml_collections.ConfigDict()
  config.export.branch = -1              # -1: the best branch of the exported step's evaluation.
  # 'best': the checkpoint with the best validation score; 'latest': the newest checkpoint.
  config.export.checkpoint = 'best'
  # What --mode export writes, comma-separated: 'orbax' (the variables + model.json, always
  # written), 'onnx' (model.onnx), 'tflite' (model.tflite); see okdhp_jax/export/deploy.py.
  # ONNX needs the `deploy` extra: pip install -e ".[deploy]".
  config.export.formats = 'orbax'

  # ---------------------------------------------------------------- compilation cache
  # JAX's persistent cache (okdhp_jax/compile_cache.py): a repeated or resumed run of the same
  # configuration loads its compiled steps instead of compiling them again.
  config.compile_cache = ml_collections.ConfigDict()
  config.compile_cache.enabled = True
  config.compile_cache.dir = ''          # '': ~/.cache/okdhp_jax/jax_compilation_cache

  # ---------------------------------------------------------------- FPD (two-stage baseline)
  config.fpd = ml_collections.ConfigDict()
  config.fpd.teacher_checkpoint = ''     # exported hourglass (Orbax) or converted PyTorch one.
  config.fpd.teacher_num_stacks = 8
  config.fpd.alpha = 0.5                 # alpha * MSE(GT) + (1 - alpha) * MSE(teacher)

  if 'runlocal' in args:
    apply_runlocal(config)
  return config


def apply_runlocal(config: ml_collections.ConfigDict) -> None:
  """Shrinks a config to the bundled samples and a CPU budget of a few minutes."""
  config.model.features = 32
  config.data.bundled = 'mpii'
  config.data.records_dir = '/tmp/okdhp_bundled_records'
  config.data.eval_annotations = '/tmp/okdhp_bundled_records/gt_valid.mat'
  config.data.num_train_examples = 0      # 0: count the records.
  config.data.input_size = (64, 64)
  config.data.heatmap_size = (16, 16)
  config.data.sigma = 1.0
  config.data.shuffle_buffer = 256
  # 5 real people (trained on and scored, a smoke test) + figures: 256 to train on, 32 held out.
  config.data.synthetic.num_train = 256
  config.data.synthetic.num_valid = 32
  # The bundled set is mostly synthetic figures, whose sides are told apart by colour: a
  # mirrored one would carry the wrong labels (data_prep/synthetic.py).
  config.data.flip = False
  config.eval.flip_test = False
  config.train.batch_size = 8
  config.train.num_epochs = 3
  config.train.log_every_steps = 10
  config.train.eval_every_epochs = 1
  config.train.checkpoint_every_steps = 50
  config.eval.batch_size = 8
  config.loss.kd_ramp_epochs = 2.0
  config.optim.learning_rate = 1e-3
  config.optim.lr_decay_epochs = (2,)
