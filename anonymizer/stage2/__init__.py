"""Stage II: the StarGAN-v2 anonymizer trained on the frozen stage-I captures."""
