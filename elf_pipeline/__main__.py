from elf_pipeline.cli import main

raise SystemExit(main())
