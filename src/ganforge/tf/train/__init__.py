"""The training room of `ganforge.tf`: the TensorFlow backend of `backend: tensorflow` (mlp and dcgan families).

`models` holds the trainable Keras G/D, translated from the torch modules with torch's semantics and checkpointed in
the torch layout (its generators are the shared graphs of `ganforge.tf.generators`, the ones the export builds);
`losses` the adversarial losses and gradient penalty in TensorFlow; `trainer.TFTrainer` the backend the training
loop composes, found by module name in `ganforge.training.launch.TRAINERS`.
"""
