"""What runs produced and how it is shown: the records and their index (:mod:`.records`), the
aggregate and its rendering (:mod:`.leaderboard`), verdicts against a source
(:mod:`.verdicts`), divergence judged from curves (:mod:`.divergence`), chaotic cells
(:mod:`.stability`), record-by-record comparison (:mod:`.compare`), the tables of a plan
(:mod:`.tables`), records files (:mod:`.export`), plots (:mod:`.figures`,
:mod:`.plotting`) and HTML reports (:mod:`.report`).
"""
