"""What goes into an extraction: image data sources (a SPEC string; each registered beside its source) and timm
backbones (a model name). Importing the package registers every source (sources.py, then hf.py)."""

from w2s_cli.inputs import hf, sources  # noqa: F401  (their @source openers fill the registry)
