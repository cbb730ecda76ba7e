import sys

from load_tests.runner import main

sys.exit(main())
