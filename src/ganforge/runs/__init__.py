"""Run folders and checkpoints: the format a trained model lives in, below training.

Code that only reads a trained generator (sampling, export, evaluation, the playground, reports) imports this
layer and never the trainer (tests/test_layers.py checks it).
"""
