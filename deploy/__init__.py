"""ONNX export with parity checks, engine builds, the deployment bundle and flashing it to a device."""
