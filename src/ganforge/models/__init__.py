"""Generator/discriminator families. Importing this package registers every built-in model."""

from ganforge.models import dcgan, mlp, progan, sngan, stylegan2  # noqa: F401  (registration side effects)
from ganforge.models.registry import MODELS, ModelFamily, build_discriminator, build_generator

__all__ = ["MODELS", "ModelFamily", "build_generator", "build_discriminator"]
