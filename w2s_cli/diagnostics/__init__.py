"""Diagnostics of representations and finetunes: intrinsic dimension and overlap (`w2s intrinsic-dim`), gradient
features (`w2s extract --features grad`), and how far a finetune left the kernel regime (`w2s kernel-check`)."""
