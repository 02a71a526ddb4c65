"""Several processes as one: reductions that keep gradients, global-batch BatchNorm."""
