"""Studies and their machinery: `w2s run` (one experiment over trials), sweeps over a grid, ranking weak
teachers, executors that spread their jobs (local workers, submitit/SLURM), and the cost estimates of --dry-run."""
