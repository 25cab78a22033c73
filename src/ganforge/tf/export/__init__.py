"""The export room of `ganforge.tf`: a trained torch generator turned into Keras, then SavedModel and TFLite.

`from_torch.numpy_weights` reads the weights the eval-mode forward pass really uses off the torch module (the only
torch import here); `mirrors.build` rebuilds the generator from them with built-in Keras layers, so the artefacts
load without ganforge. mlp and dcgan are the shared graphs of `ganforge.tf.generators`, the ones the training room
trains. `ganforge.export` drives this room and writes the files.
"""
