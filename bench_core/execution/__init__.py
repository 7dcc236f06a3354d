"""Where and how runs execute: the runner (:mod:`.runner`: sessions, records, grouping into work
units, resume), the built-in executors (:mod:`.executors`: ``local`` and ``processes``; part
of the host), the guards against orphaned or runaway workers (:mod:`.process_guard`,
:mod:`.safeguards`), the probe of the machine a run ran on (:mod:`.environment`), the
one-ulp perturbation (:mod:`.perturbation`) and the replay of recorded runs (:mod:`.replay`).
"""
