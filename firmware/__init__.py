"""What runs on the device: frame sources, the inference pipeline and sinks (never imports torch)."""
