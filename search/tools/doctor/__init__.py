"""Diagnose training on a dataset with a quick baseline, and recommend a search space.

:func:`diagnose` trains the default small CNN for a few epochs, reads its learning curves and
the data, and returns :class:`Finding` objects, each with the numbers behind it.
:func:`recommend_space` turns the findings into a commented space file that ``strategy-search
run`` accepts: every param it writes carries a comment saying which finding put it there.
:func:`run_doctor` is the ``doctor`` command as one call.

Parts: ``findings`` (types, thresholds), ``diagnose`` (baseline, curves, color probe),
``data_facts`` (facts and data findings from the loaded dataset), ``remedies`` (registered values),
``recommend`` (findings -> space document), ``emit`` (commented YAML), ``report`` (text), ``run``.
"""

from search.tools.doctor.data_facts import data_facts, data_findings, imbalance_finding
from search.tools.doctor.diagnose import baseline_config, curve_findings, diagnose, load_for_baseline
from search.tools.doctor.findings import Diagnosis, Finding, honest_objective
from search.tools.doctor.recommend import baseline_entry, conflicting, first_trial_config, recommend_space
from search.tools.doctor.remedies import pick, strategy_values
from search.tools.doctor.report import format_report
from search.tools.doctor.run import DoctorRun, run_doctor

__all__ = [
    "Diagnosis", "DoctorRun", "Finding", "baseline_config", "baseline_entry", "conflicting", "curve_findings",
    "data_facts", "data_findings", "diagnose", "first_trial_config", "format_report", "honest_objective", "imbalance_finding",
    "load_for_baseline", "pick", "recommend_space", "run_doctor", "strategy_values",
]
