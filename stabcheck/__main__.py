import sys

from stabcheck.cli import main

sys.exit(main())
