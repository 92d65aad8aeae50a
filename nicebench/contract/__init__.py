"""The plugin contracts as lists of named rules; :mod:`nicebench.testing` runs them.

Each kind's rules live in its own module (:mod:`.method_rules`, :mod:`.gate_rules`,
:mod:`.dataset_rules`, :mod:`.codec_rules`); :mod:`.rules` holds what they share.
"""
