"""The model plane: the VFM as a sampling-capable server, backends, routing, reasoning levels, budgets."""
