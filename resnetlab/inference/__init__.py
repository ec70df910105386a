"""Using a trained model: `predict` (top-k classes of images) and `export` (ONNX, safetensors).

The functions are not re-exported here: a package attribute named ``predict`` would
shadow the ``resnetlab.inference.predict`` module. `resnetlab.predict` is the short name.
"""
