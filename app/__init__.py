"""The Jacobian service. Importing the package first sets the environment TensorFlow must start
with (see `app.tensorflow_env`), whichever module is the entry point."""

from app import tensorflow_env

tensorflow_env.apply()
