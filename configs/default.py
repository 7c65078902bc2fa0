r"""Defaults shared by every experiment: OKDHP-HG4 (balanced, released FAU) on MPII.

Every other config imports `get_config` from here and changes only what differs. Run:

  python -m okdhp_jax.main --config configs/default.py --workdir /tmp/okdhp_default

The argument string (after `:`) is read by `parse_arg`: `runlocal` shrinks the model, batch,
steps and data to the bundled samples so the config runs on a laptop CPU. Each leaf config
applies `runlocal` last, after everything else it sets.
"""

import ml_collections


def parse_arg(arg: str | None, **spec) -> ml_collections.ConfigDict:
  """A config argument as typed fields: 'runlocal,variant=fpd' -> {runlocal: True, variant: 'fpd'}.

  `spec` names every field the config accepts and its default, whose type the value takes
  (a bare name sets a bool field to True). An unknown name or a bad value is a ValueError
  naming the config argument.
  """
  parsed = ml_collections.ConfigDict(spec)
  for item in filter(None, (a.strip() for a in (arg or '').split(','))):
    name, has_value, text = (part.strip() for part in item.partition('='))
    if name not in spec:
      raise ValueError(f'config argument {item!r}: expected one of {sorted(spec)}')
    default = spec[name]
    if not has_value:
      if not isinstance(default, bool):
        raise ValueError(f'config argument {name!r} needs a value: {name}=...')
      parsed[name] = True
    elif isinstance(default, bool):
      if text.lower() not in ('true', 'false', '1', '0'):
        raise ValueError(f'config argument {item!r}: {name} is true or false')
      parsed[name] = text.lower() in ('true', '1')
    else:
      try:
        parsed[name] = type(default)(text)
      except ValueError:
        raise ValueError(f'config argument {item!r}: {name} takes a '
                         f'{type(default).__name__}') from None
  return parsed


def set_method(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """Selects training method `name` (okdhp_jax/methods/) and adds its own config section."""
  from okdhp_jax import methods  # pylint: disable=g-import-not-at-top
  method = methods.get_method(name)
  config.method = name
  defaults = method.default_config()
  if defaults is not None and method.config_section not in config:
    config[method.config_section] = defaults
  return config


def set_network(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """Selects network `name` (okdhp_jax/models/) with its own config.model section.

  The section starts at the network's defaults; the previous network's section goes, so
  config.model holds the shared fields and the selected network's fields only.
  """
  from okdhp_jax import models  # pylint: disable=g-import-not-at-top
  defaults = models.get_spec(name).default_config()
  previous = config.model.get('name')
  if previous not in (None, name) and previous in config.model:
    del config.model[previous]
  config.model.name = name
  if name not in config.model:
    config.model[name] = ml_collections.ConfigDict(defaults)
  return config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = parse_arg(arg, runlocal=False)
  config = ml_collections.ConfigDict()
  config.seed = 0
  # okdhp_jax/methods/: 'okdhp' (also the plain baseline, with one branch) or 'fpd'; each
  # method adds its own section (OKDHP: config.loss; FPD: config.fpd).
  set_method(config, 'okdhp')

  # ---------------------------------------------------------------- model
  # What every network reads; the network's own fields are its section, added by set_network.
  config.model = ml_collections.ConfigDict()
  config.model.fau = 'released'          # 'released' | 'paper' | 'none'
  config.model.fau_hidden = 64
  # Compute dtype. 'auto': bfloat16 on GPU and TPU, float32 on CPU; parameters, optimiser state,
  # BatchNorm statistics, softmaxes and losses stay float32 (param_dtype, okdhp_jax/precision.py).
  config.model.dtype = 'auto'
  config.model.param_dtype = 'float32'
  # okdhp_jax/models/: 'hourglass', with config.model.hourglass = num_shared_stacks (OKDHP shares
  # the first N/2 stacks), branch_stacks (private stacks per branch; (N,) with 0 shared is the
  # plain network), features, depth, fuse_branches ('gpu': on a GPU the branches' stacks run as
  # one vmapped computation, grouped convolutions; 'always', 'never'), pointwise_matmul ('gpu':
  # on a GPU 1x1 convs are matrix products, GEMMs inside CUDA graphs), remat ('gpu': on a GPU a
  # training step's bottlenecks recompute their convolutions' inputs in the backward pass,
  # 40 % less memory, 10 % more kernels, about the same HBM traffic); or
  # 'mobilepose', with config.model.mobilepose = backbone (a key of ENCODERS in
  # okdhp_jax/models/mobilepose.py), num_branches.
  set_network(config, 'hourglass')

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
  # BatchNorm's training statistics: 'global' (over the global batch, so any device count
  # trains as one device does; a collective per layer) or 'per_device' (over each device's
  # share, as the released code's DataParallel replicas; okdhp_jax/training/step.py).
  config.train.batch_norm_stats = 'global'
  # The state between steps: per array, or one vector per dtype so that Adam and the running
  # averages take a handful of kernels instead of hundreds ('gpu', 'always', 'never';
  # okdhp_jax/training/flat_state.py). Checkpoints are the same either way.
  config.train.flat_state = 'gpu'
  config.train.num_epochs = 150
  config.train.log_every_steps = 50
  config.train.eval_every_epochs = 10
  config.train.checkpoint_every_steps = 1000
  config.train.keep_checkpoints = 3
  config.train.num_images_to_draw = 4
  # Stop (keeping the last good checkpoint) when a checked loss exceeds this many times the
  # median of the last `divergence_window` checked losses (the largest of them while fewer
  # than 5 are known; the first step's, an untrained network's on a fresh run, is always
  # checked); 0 turns the check off.
  config.train.divergence_factor = 100.0
  config.train.divergence_window = 20
  # Steps to trace with jax.profiler right after the first evaluation (0: none), on process 0;
  # TensorBoard's profile plugin opens the trace from WORKDIR/plugins/profile/.
  config.train.profile = 0

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
  # written), 'onnx' (model.onnx), 'tflite' (model.tflite), and quantised after training:
  # 'tflite_fp16' (model_fp16.tflite, float16 weights), 'tflite_int8' (model_int8.tflite, full
  # integer), 'onnx_int8' (model_int8.onnx, onnxruntime QDQ); see okdhp_jax/export/deploy.py.
  # ONNX needs the `deploy` extra: pip install -e ".[deploy]".
  config.export.formats = 'orbax'
  # Training-split people the int8 formats calibrate their ranges on: a fixed seeded sample,
  # evaluation-style crops (okdhp_jax/export/deploy_calibration.py says why ~128).
  config.export.calibration_crops = 128
  # Measure each deployment file (bytes, batch-1 latency) and score it on config.data.eval_split
  # beside the float32 student, into model.json (okdhp_jax/experiment/deploy_report.py).
  config.export.score_files = True

  # ---------------------------------------------------------------- compilation cache
  # JAX's persistent cache (okdhp_jax/compile_cache.py): a repeated or resumed run of the same
  # configuration loads its compiled steps instead of compiling them again.
  config.compile_cache = ml_collections.ConfigDict()
  config.compile_cache.enabled = True
  config.compile_cache.dir = ''          # '': ~/.cache/okdhp_jax/jax_compilation_cache

  if arg.runlocal:
    runlocal(config)
  return config


def runlocal(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks a config to the bundled samples of its dataset and a CPU budget of minutes."""
  bundled = BUNDLED[config.data.dataset]
  for network, fields in bundled['model'].items():
    if network in config.model:  # only the selected network has a section.
      config.model[network].update(fields)
  config.data.update(bundled['data'])
  config.data.num_train_examples = 0      # 0: count the records.
  config.data.sigma = 1.0
  config.data.shuffle_buffer = 256
  config.data.detections = ''
  # 5 real people (trained on and scored, a smoke test) + figures: 256 to train on, 32 held out.
  config.data.synthetic.num_train = 256
  config.data.synthetic.num_valid = 32
  config.eval.flip_test = config.data.flip
  config.train.batch_size = 8
  config.train.num_epochs = 3
  config.train.log_every_steps = 10
  config.train.eval_every_epochs = 1
  config.train.checkpoint_every_steps = 50
  config.eval.batch_size = 8
  config.loss.kd_ramp_epochs = 2.0
  config.optim.learning_rate = 1e-3
  config.optim.lr_decay_epochs = (2,)
  return config


# What `runlocal` trains on, per dataset: the samples bundled in data_prep/samples.
BUNDLED = {
    # Mostly generated figures, whose sides are told apart by colour: a mirrored one would carry
    # the wrong labels (data_prep/synthetic.py), so no flips.
    'mpii': dict(
        model=dict(hourglass=dict(features=32)),
        data=dict(bundled='mpii', records_dir='/tmp/okdhp_bundled_records',
                  eval_annotations='/tmp/okdhp_bundled_records/gt_valid.mat',
                  input_size=(64, 64), heatmap_size=(16, 16), flip=False)),
    # Real people only, so mirroring is sound. 4:3 like 256x192; a depth-3 hourglass halves
    # 128x96 cleanly (depth 4 needs multiples of 64).
    'coco': dict(
        model=dict(hourglass=dict(features=32, depth=3)),
        data=dict(bundled='coco', records_dir='/tmp/okdhp_bundled_coco_records',
                  eval_annotations='/tmp/okdhp_bundled_coco_records/annotations_valid.json',
                  input_size=(128, 96), heatmap_size=(32, 24), flip=True)),
}
