"""Export: the deployed student as a plain network in a self-describing folder.

Which variables and which `config.model` a branch deploys as is the network's to say
(`okdhp_jax.models.export_student`, `deployed_model_config`).

  store.py    the export folder format: Orbax variables + model.json (save and load).
  trained.py  `--mode export`: picks the branch of a trained run and writes its folder.
  deploy.py   model.onnx and model.tflite beside the variables (config.export.formats).
  deploy_graph.py   the deployed function: uint8 crops -> heatmaps, keypoints, scores (jnp).
  deploy_tflite.py  jax2tf + the TFLite converter; runs a .tflite file.
  deploy_onnx.py    tf2onnx from the .tflite file; runs a .onnx file with onnxruntime.

The PyTorch converter (tools/convert_torch.py) and the FPD teacher use the same folder format.
"""
