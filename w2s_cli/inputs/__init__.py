"""What goes into an extraction: image data sources (a SPEC string) and timm backbones (a model name)."""
