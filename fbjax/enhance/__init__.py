"""Enhancement: filters (pure jnp), linen wrappers, image-quality metrics."""
