"""Finetuned students: the strong backbone itself trained on the teacher's labels (`w2s finetune`).

recipe.py (what trains, the loss, the optimiser: one frozen record), network.py (the strong network rebuilt
from its embeddings' record, cut into a frozen prefix and a trained suffix, the LP-FT head), lora.py (LoRA
adapters through peft), train.py (the loop: batches, checkpoints, validation, torchrun). The stage that
ties them to the pipeline's split is `w2s_cli/stages/finetune.py`.
"""
