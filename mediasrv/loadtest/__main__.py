import sys

from mediasrv.loadtest.cli import main

sys.exit(main())
