"""benchmarks: python -m benchmarks measures training and sampling speed against the machine's matmul peak."""
