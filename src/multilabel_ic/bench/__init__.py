"""Throughput benchmarks: local training (with the model-only ceiling), the input pipeline against a plain
PIL + torchvision loader, SageMaker jobs from their logs, inference latency, and the side-by-side report.

Benchmarks print figures and write JSON; they are never timed tests.
"""
