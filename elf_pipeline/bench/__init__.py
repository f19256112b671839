"""The speed benchmark (``elf-pipeline bench``, ``make bench``), a tool no workflow rule runs: ``run``
times the pipeline's student trainer against an official-style loop (``official_loop``) on
identical work, optionally beside competing jobs (``contention``) and with the kernels' peak rates
and the instance-norm options (``kernels``)."""
