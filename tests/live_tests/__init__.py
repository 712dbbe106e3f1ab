"""Live tests against llama-cpp-python's OpenAI-compatible server and a tiny generated model."""
