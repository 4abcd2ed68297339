"""The worker as it was before issue 13: `celery -A benchmarks.before_app worker`.

Only for the side-by-side figures of benchmarks/scale.py (what changed: benchmarks/before_code.py).
"""

from benchmarks import before_code
from tasks import app

__all__ = ["app"]

before_code.apply()
