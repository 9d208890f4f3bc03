"""fbjax: JAX/Flax research code for 2-D fetal brain ultrasound."""

__version__ = "0.1.0"
