"""Infrastructure the stages share: errors, atomic I/O and hashes, resumable state, GPU locks, the
memory allocator, output safekeeping for the workflow and figure styling. Imports nothing else of
the package."""
