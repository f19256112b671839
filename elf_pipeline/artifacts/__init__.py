"""Reading and writing the pipeline's artifacts: result tables and the files between stages."""
