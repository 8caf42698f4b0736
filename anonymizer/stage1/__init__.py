"""Stage I: the optic and the heatmap regressor learned against an identity adversary."""
