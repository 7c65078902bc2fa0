"""Export: the deployed student as a plain network in a self-describing folder.

  branch.py   one branch re-keyed as a plain network: a StackedHourglass, or a MobilePose with
              the shared encoder and one decoder.
  store.py    the export folder format: Orbax variables + model.json (save and load).
  trained.py  `--mode export`: picks the branch of a trained run and writes its folder.
  deploy.py   model.onnx and model.tflite beside the variables (config.export.formats).
  deploy_graph.py   the deployed function: uint8 crops -> heatmaps, keypoints, scores (jnp).
  deploy_tflite.py  jax2tf + the TFLite converter; runs a .tflite file.
  deploy_onnx.py    tf2onnx from the .tflite file; runs a .onnx file with onnxruntime.

The PyTorch converter (tools/convert_torch.py) and the FPD teacher use the same folder format.
"""
