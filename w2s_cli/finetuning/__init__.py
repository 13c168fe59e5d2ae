"""Finetuned students: the strong backbone itself trained on the teacher's labels (`w2s finetune`).

network.py (the strong network rebuilt from its embeddings' record, cut into a frozen prefix and a trained
suffix, the LP-FT head; the one weights loader), prefix.py (the frozen prefix's cache), lora.py (LoRA
adapters through peft), train.py (the loop: batches, checkpoints, validation, torchrun), job.py (what the
three fits share, and one fit run), gradients.py (per-sample gradient features). The recipe is an option
object (w2s_cli/options/recipe.py); the stage that ties them to the pipeline's split is
w2s_cli/stages/finetune.py.
"""
