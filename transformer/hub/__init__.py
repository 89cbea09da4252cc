"""Hugging Face checkpoints in and out: a directory of config.json and model.safetensors
read into a DecoderLM, and written back. It depends on the models; the models do not
depend on it.

- `pretrained.py`: reading and writing the directory, with every check on the way;
- `gpt2.py`, `llama.py`: each family's names and layouts mapped onto DecoderLM's.

`DecoderLM.from_pretrained(path)` and `lm.save_pretrained(path)` call `pretrained.py`'s
functions, which this package hands to DecoderLM when imported (`import transformer`
imports it): lm.py never imports the hub, so there is no import circle.
"""
from ..lm import DecoderLM
from . import pretrained
from .pretrained import from_pretrained, save_pretrained

DecoderLM.hub = pretrained

__all__ = ["from_pretrained", "save_pretrained"]
