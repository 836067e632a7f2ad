"""Tests run with float64 enabled so exactness checks are meaningful; float32 behaviour is tested
with explicit float32 inputs."""

import jax

jax.config.update("jax_enable_x64", True)
