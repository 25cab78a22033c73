"""The latent space of a trained generator: project real images into it, find directions in it, edit along them.

`core` holds what every latent tool shares: a `Latent` (values + the space they live in + labels and, for
style models, per-layer noise), rendering one to images, the generator's fingerprint, and the `.npz` format
that ties a latent or a direction file to the generator it belongs to.
"""
