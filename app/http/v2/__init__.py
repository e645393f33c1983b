"""The Open Inference Protocol (KServe V2) over the same service: its routes and its bodies."""
