"""From captures of a point source to a measured PSF, a fitted optic and sim-to-real fine-tuning."""
