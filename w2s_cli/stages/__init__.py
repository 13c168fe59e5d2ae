"""The pipeline's stages as functions: train-weak, pseudolabel, fit-student, run, sweep, rank-teachers.
None of them imports torch: they read embeddings artifacts in row chunks and do float64 math."""
