import sys

from learn2pd.harness.cli import main

sys.exit(main())
