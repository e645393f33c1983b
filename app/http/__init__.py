"""The web side, in the HTTP workers: the ASGI app, the native routes (decode, compute, encode),
errors to HTTP, metrics. No TensorFlow."""
