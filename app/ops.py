"""Names of the engine's operations, shared by the engine and the layers that call it."""

JACOBIAN = "jacobian"
JACOBIAN_Y = "jacobian_y"
JACOBIAN_XY = "jacobian_xy"
HESSIAN = "hessian"
HVP = "hvp"
