"""TensorFlow, and only here: the traced derivative functions and the XLA policy."""
