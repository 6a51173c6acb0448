"""Print the ``name==version`` pins of environment.yml's pip section (one per line) as pip constraints."""

import re
import sys

for line in open(sys.argv[1]):
    m = re.match(r"\s*-\s*([A-Za-z0-9_.\-\[\]]+==[^\s#]+)", line)
    if m and not m.group(1).startswith("torch=="):  # torch is installed first, from local disk
        print(m.group(1))
