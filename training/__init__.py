"""Training stage: raw events -> fitted NVTabular workflow -> trained Transformer recommender."""
import warnings

# Merlin warns on every CPU run about things that do not apply here (no TensorFlow is used;
# the CPU path is the one this project runs and tests).
warnings.filterwarnings("ignore", message="Tensorflow dtype mappings did not load")
warnings.filterwarnings("ignore", message="Initializing an NVTabular Dataset in CPU mode")
