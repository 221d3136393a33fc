import sys

from robustrec.cli import main

sys.exit(main())
