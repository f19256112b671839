"""Readers for the raw on-disk formats of the datasets ``prepare_data`` understands.

One module per family (``mnist``, ``cifar``, ``svhn``, ``folders``); ``catalog`` holds the
plain tables (source names, published statistics, ImageNet subsets) that the torch-free config
checks use too.  ``elf_pipeline.stages.data.SOURCES`` maps each source name to its reader.
"""
