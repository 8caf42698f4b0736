"""The networks: heatmap regressor, identity adversary (IResNet + ArcFace), StarGAN-v2, heatmaps."""
