"""Getting a model: Hugging Face downloads, local sources, conversion, installs
of pre-converted models, the demo model.
"""
