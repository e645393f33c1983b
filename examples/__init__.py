"""Example models for the model repository (`make models`)."""
