"""Hugging Face checkpoints in and out: a directory of config.json and model.safetensors
read into a DecoderLM, and written back. It depends on the models; the models do not
depend on it (`DecoderLM.from_pretrained` imports it when called).

- `pretrained.py`: reading and writing the directory, with every check on the way;
- `gpt2.py`, `llama.py`: each family's names and layouts mapped onto DecoderLM's.
"""
from .pretrained import from_pretrained, save_pretrained

__all__ = ["from_pretrained", "save_pretrained"]
