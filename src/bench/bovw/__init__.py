"""Bag of Visual Words parts: local descriptors with an on-disk cache, and a codebook / encoding / classifier pipeline
that takes any store of local descriptors (OpenCV's, or a network's patch features used as dense descriptors)."""
from bench.bovw.descriptors import DescriptorError, DescriptorSpec, LocalFeatures, load_features
from bench.bovw.pipeline import BoVWError, BoVWPipeline, FeatureClassifier, PipelineConfig

__all__ = ["BoVWError", "BoVWPipeline", "FeatureClassifier", "DescriptorError", "DescriptorSpec", "LocalFeatures", "PipelineConfig", "load_features"]
