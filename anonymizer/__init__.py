"""Networks and their training: heatmap regressor, identity adversary, StarGAN-v2, stage I and II trainers."""
