import sys

from mediasrv.cli import main

sys.exit(main())
