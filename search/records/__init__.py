"""What a study stores: every attribute key, how it is written and read, and ranking.

``from search import records`` is the way in: ``records.CONFIG``, ``records.best_trial(study)``...
"""

from search.records.trials import *  # noqa: F401,F403  (the names are listed in trials.__all__)
from search.records.trials import __all__  # noqa: F401
