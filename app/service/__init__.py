"""What each operation computes, with no web and no TensorFlow: validation, limits, the memory estimate, encoding."""
