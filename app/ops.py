"""Names of the engine's operations, shared by the engine and the layers that call it."""

JACOBIAN = "jacobian"
JACOBIAN_Y = "jacobian_y"
JACOBIAN_XY = "jacobian_xy"
HESSIAN = "hessian"
HVP = "hvp"


def output_shapes(op: str, rows: int, A: int, F: int) -> dict[str, tuple[int, ...]]:
    """What the engine returns for `rows` problems of size A×F (W, and the op's derivative)."""
    shapes: dict[str, tuple[int, ...]] = {"W": (rows, A)}
    if op in (JACOBIAN, JACOBIAN_XY):
        shapes["J"] = (rows, A, A, F)
    if op in (JACOBIAN_Y, JACOBIAN_XY):
        shapes["J_Y"] = (rows, A, F)
    if op == HESSIAN:
        shapes["H_lse"] = (rows, A, F, A, F)
    if op == HVP:
        shapes["HV"] = (rows, A, A, F)
    return shapes


# XLA keeps its own buffers beside TensorFlow's allocator pool, so a shape served both ways holds
# both; above this output size XLA gains little (12% at 256×1024) and is not used (app.budget).
XLA_MAX_OUTPUT_BYTES = 16 << 20


def output_bytes(op: str, rows: int, A: int, F: int, itemsize: int) -> int:
    total = 0
    for shape in output_shapes(op, rows, A, F).values():
        n = 1
        for d in shape:
            n *= d
        total += n
    return total * itemsize
