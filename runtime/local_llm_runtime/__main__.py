"""``python -m local_llm_runtime`` runs the ``local-llm`` CLI."""

import sys

from local_llm_runtime.cli.main import main

sys.exit(main())
