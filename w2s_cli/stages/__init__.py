"""The pipeline's stages, each what one subcommand of the chain does: the split, train-weak and pseudolabel
(teacher.py), fit-student (student.py: heads, the one-pass design, the theory analysis), finetune, and the
summary `w2s report` reads. None of them imports torch but finetune."""
