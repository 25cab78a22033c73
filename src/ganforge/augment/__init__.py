"""Differentiable augmentations applied to every image D sees (real and fake), so D cannot memorise a
small dataset while G still gets gradients through the augmentation. Registered by name."""

from ganforge.augment.ada import ADA, ADA_TRANSFORMS
from ganforge.augment.diffaugment import POLICIES, DiffAugment

__all__ = ["ADA", "ADA_TRANSFORMS", "DiffAugment", "POLICIES"]
