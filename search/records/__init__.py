"""What a study stores: every attribute key, how it is written and read, and ranking.

``from search import records`` is the way in: ``records.CONFIG``, ``records.best_trial(study)``,
``records.ablation(study)`` (an ``AblationRecord``)...
"""

from search.records import retraining as _retraining
from search.records import trials as _trials
from search.records.retraining import *  # noqa: F401,F403  (the names are listed in retraining.__all__)
from search.records.trials import *  # noqa: F401,F403  (the names are listed in trials.__all__)

__all__ = [*_trials.__all__, *_retraining.__all__]
