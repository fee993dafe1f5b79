"""mlx-native-server: a local OpenAI- and Anthropic-compatible endpoint for a big MLX model."""

__version__ = "0.1.0"
