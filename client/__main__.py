"""``python -m client "a prompt" -o out.png``: one image from the running cascade."""
import sys

from client.cascade import main

sys.exit(main())
