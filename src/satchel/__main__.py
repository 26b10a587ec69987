import sys

from satchel.cli.main import main

sys.exit(main())
